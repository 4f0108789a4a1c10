"""The REST API under load: GET /entries latency and throughput, and `dset serve` start-up time.

    python bench/bench_api.py                      # 100,000 entries, 8 connections, 10 s per scenario
    python bench/bench_api.py --entries 20000 --seconds 3 --startup-events 200000

1. A data dir holding one 100,000-entry dataset (DatasetCreated, then per entry a SlotQueued, an
   EntryGenerated and an EntryScored; 300,001 events) is served by a real `dset serve` subprocess
   (waitress, --threads, no job worker). A second process (this script with --load) keeps
   --connections keep-alive HTTP/1.1 connections busy with GET /datasets/{id}/entries requests for
   --seconds per scenario, pages drawn at random, and reports p50/p99 latency and requests/s.
   Every scenario is asked once before it is timed (its sorted, filtered index is built then).
2. Start-up: the time from spawning `dset serve` to its first 200 on GET /api/v1/health, on a
   --startup-events log made by bench/make_log.py, without a snapshot (a full replay), and with the
   snapshot the first server saved when it was stopped cleanly.

Targets from the issue: p99 <= 20 ms and >= 1,000 requests/s on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

DATASET = "dataset_bench"
CATEGORIES = ("Science", "History", "Technology", "Health", "Finance", "Geography", "")
DIFFICULTIES = ("beginner", "intermediate", "advanced", "expert")
WORDS = ("the model data training answer question system process energy water cell protein market price "
         "policy history culture language network signal memory storage reaction force field theory method").split()

# (name, query string without page); pages are drawn from 1..pages of the scenario
SCENARIOS = [
    ("GET /health (floor)", ""),
    ("default (sort quality)", "per_page=50"),
    ("filter_quality=0.8", "per_page=50&filter_quality=0.8&sort_by=quality"),
    ("sort category + filter", "per_page=50&sort_by=category&category=Science"),
    ("search q=", "per_page=50&q=protein+market"),
    ("per_page=500", "per_page=500&sort_by=difficulty"),
]


# --- the data ------------------------------------------------------------------------------------------


def write_dataset(data: Path, n: int, *, seed: int = 11) -> None:
    from dsetlog.store.events import DatasetCreated, EntryGenerated, EntryScored, Event, SlotQueued
    from dsetlog.store.layout import encode_records
    from dsetlog.store.log import LOG_NAME

    rng = random.Random(seed)
    path = data / LOG_NAME
    data.mkdir(parents=True, exist_ok=True)
    seq = 1
    with open(path, "wb") as fh:
        first: list[Event] = [DatasetCreated(dataset_id=DATASET, name="bench", kind="documents", source="bench")]
        fh.write(encode_records(first, first_seq=seq, ts="2026-01-01T00:00:00.000000Z"))
        seq += 1
        batch: list[Event] = []
        for i in range(n):
            item, entry = f"slot_{i:07d}", f"entry_{i:07d}"
            batch.append(SlotQueued(dataset_id=DATASET, item_id=item, chunk_id=f"chunk_{i // 3}", slot=i % 3))
            batch.append(EntryGenerated(
                dataset_id=DATASET, item_id=item, entry_id=entry,
                question=" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 14))) + "?",
                answer=" ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 60))) + ".",
                category=rng.choice(CATEGORIES), model="sim-chat", provider="simulated", simulated=True,
                source_chunk=f"chunk_{i // 3}", metadata={"chunk_length": rng.randint(300, 2000), "slot": i % 3}))
            batch.append(EntryScored(dataset_id=DATASET, entry_id=entry, quality_score=round(rng.random(), 3),
                                     quality={"groundedness": round(rng.random(), 3)},
                                     difficulty=rng.choice(DIFFICULTIES)))
            if len(batch) >= 3000:
                fh.write(encode_records(batch, first_seq=seq, ts="2026-01-01T00:00:01.000000Z"))
                seq += len(batch)
                batch.clear()
        if batch:
            fh.write(encode_records(batch, first_seq=seq, ts="2026-01-01T00:00:01.000000Z"))


# --- the server ------------------------------------------------------------------------------------------


def start_server(data: Path, threads: int, log_file: Path) -> tuple[subprocess.Popen[str], str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSET_")}
    t0 = time.perf_counter()
    with open(log_file, "ab") as err:
        proc = subprocess.Popen([sys.executable, "-m", "dsetlog", "serve", "--data", str(data), "--port", "0",
                                 "--threads", str(threads), "--no-worker"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=err, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("dset serve: http://"):
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}\n{log_file.read_text()}")
    base = line.split()[2]
    while True:  # the banner is printed when it listens; the first 200 is what a client waits for
        try:
            with urllib.request.urlopen(base + "/health", timeout=5) as resp:
                if resp.status == 200:
                    break
        except OSError:
            time.sleep(0.01)
    return proc, base, time.perf_counter() - t0


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout:
        proc.stdout.close()


# --- the load (runs in its own process) ---------------------------------------------------------------------


async def _connection(host: str, port: int, paths: list[str], deadline: float, latencies: list[float],
                      errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    rng = random.Random(id(latencies) ^ len(paths))
    try:
        while time.perf_counter() < deadline:
            path = rng.choice(paths)
            request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n".encode()
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                errors.append(str(status))
    finally:
        writer.close()


def run_load(base: str, paths: list[str], connections: int, seconds: float) -> dict[str, float]:
    from urllib.parse import urlsplit

    url = urlsplit(base)
    latencies: list[float] = []
    errors: list[str] = []

    async def main() -> float:
        deadline = time.perf_counter() + seconds
        t0 = time.perf_counter()
        await asyncio.gather(*(_connection(url.hostname or "127.0.0.1", url.port or 80, paths, deadline,
                                           latencies, errors) for _ in range(connections)))
        return time.perf_counter() - t0

    elapsed = asyncio.run(main())
    lat = sorted(latencies)
    return {"requests": len(lat), "errors": len(errors), "rps": len(lat) / elapsed,
            "p50_ms": 1000 * lat[len(lat) // 2], "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            "max_ms": 1000 * lat[-1], "mean_ms": 1000 * statistics.fmean(lat)}


def load_main(args: argparse.Namespace) -> int:
    spec = json.loads(sys.stdin.read() if args.load == "-" else args.load)
    print(json.dumps(run_load(spec["base"], spec["paths"], spec["connections"], spec["seconds"])))
    return 0


# --- the benchmark ------------------------------------------------------------------------------------------


def bench_entries(args: argparse.Namespace, work: Path) -> list[tuple[str, dict[str, float], int]]:
    data = work / "entries"
    t0 = time.perf_counter()
    write_dataset(data, args.entries)
    print(f"wrote {args.entries:,} entries ({3 * args.entries + 1:,} events) in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)
    proc, base, startup = start_server(data, args.threads, work / "server-entries.log")
    print(f"server up in {startup:.2f} s at {base}", file=sys.stderr)
    rows = []
    try:
        for name, query in SCENARIOS:
            if not query:
                paths, per_page = ["/" + f"{base}/health".split("://", 1)[1].split("/", 1)[1]], 0
            else:
                url = f"{base}/datasets/{DATASET}/entries?{query}"
                with urllib.request.urlopen(url + "&page=1", timeout=120) as resp:  # builds the index
                    first = json.loads(resp.read())
                per_page = first["per_page"]
                pages = max(1, min(first["pages"], 2000))
                prefix = url.split("://", 1)[1].split("/", 1)[1]
                paths = [f"/{prefix}&page={p}" for p in range(1, pages + 1)]
            spec = json.dumps({"base": base, "paths": paths, "connections": args.connections, "seconds": args.seconds})
            out = subprocess.run([sys.executable, __file__, "--load", "-"], input=spec, capture_output=True,
                                 text=True, check=True)
            result = json.loads(out.stdout)
            rows.append((name, result, per_page))
            print(f"  {name}: {result['rps']:.0f} req/s, p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms",
                  file=sys.stderr)
    finally:
        stop_server(proc)
    return rows


def bench_startup(args: argparse.Namespace, work: Path) -> list[tuple[str, float]]:
    from make_log import write_log

    data = work / "startup"
    t0 = time.perf_counter()
    write_log(data, args.startup_events)
    print(f"wrote {args.startup_events:,} events in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    out = []
    for run in range(args.startup_runs):
        shutil.rmtree(data / "snapshots", ignore_errors=True)
        proc, _, cold = start_server(data, args.threads, work / "server-startup.log")
        stop_server(proc)  # a clean stop saves the snapshot
        proc, _, warm = start_server(data, args.threads, work / "server-startup.log")
        stop_server(proc)
        out += [(f"no snapshot (full replay), run {run + 1}", cold), (f"with snapshot, run {run + 1}", warm)]
        print(f"  start-up: {cold:.2f} s without snapshot, {warm:.2f} s with", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections of the load process")
    parser.add_argument("--seconds", type=float, default=10.0, help="per scenario")
    parser.add_argument("--threads", type=int, default=8, help="dset serve --threads")
    parser.add_argument("--startup-events", type=int, default=1_000_000)
    parser.add_argument("--startup-runs", type=int, default=1)
    parser.add_argument("--skip-startup", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the scratch data dirs")
    parser.add_argument("--load", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load:
        return load_main(args)
    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    try:
        rows = bench_entries(args, work)
        startup = [] if args.skip_startup else bench_startup(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    cmd = "python bench/bench_api.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"\n$ {cmd.strip()}")
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; dset serve --threads {args.threads}; "
          f"{args.connections} keep-alive connections from a second process, {args.seconds:g} s per scenario\n")
    print(f"GET /api/v1/datasets/{{id}}/entries on a {args.entries:,}-entry dataset")
    print(f"| {'scenario':<24} | {'per_page':>8} | {'req/s':>7} | {'p50 ms':>7} | {'p99 ms':>7} | {'max ms':>7} | errors |")
    print(f"|{'-' * 26}|{'-' * 10}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 9}|--------|")
    for name, r, per_page in rows:
        print(f"| {name:<24} | {per_page:>8} | {r['rps']:>7.0f} | {r['p50_ms']:>7.2f} | {r['p99_ms']:>7.2f} | "
              f"{r['max_ms']:>7.1f} | {r['errors']:>6} |")
    if startup:
        print(f"\n`dset serve` start-up to the first 200 on a {args.startup_events:,}-event log")
        print(f"| {'case':<34} | {'seconds':>7} |")
        print(f"|{'-' * 36}|{'-' * 9}|")
        for name, seconds in startup:
            print(f"| {name:<34} | {seconds:>7.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
