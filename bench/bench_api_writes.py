"""The REST API under mixed load: 80% reads, 20% writes, on a 100,000-entry dataset.

    python bench/bench_api_writes.py                     # 100,000 entries, 32 connections, 10 s
    python bench/bench_api_writes.py --entries 20000 --seconds 5

A real `dset serve` subprocess (waitress, --threads, no job worker) serves a data dir made by
bench/bench_api.py's maker. A second process keeps --connections keep-alive connections busy: each
request is, at random, a GET of an entries page (80%: the default sort, a quality filter, a category) or a
PUT of one entry's answer (20%, an EntryEdited appended and fsync'd before the answer). Every write is
durable when answered; concurrent writes share fsyncs (group commit in dsetlog.store.log.EventLog). It prints
requests/s, p50/p99 of reads and of writes, and the load process's CPU (so a client-bound figure shows).

Targets (issue 11): >= 1,000 requests/s and p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_api import DATASET, start_server, stop_server, write_dataset  # noqa: E402

READS = ["per_page=50", "per_page=50&filter_quality=0.8&sort_by=quality", "per_page=50&sort_by=category&category=Science"]


async def _connection(host: str, port: int, n_entries: int, deadline: float, out: dict[str, list[float]],
                      errors: list[str], seed: int) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    rng = random.Random(seed)
    try:
        while time.perf_counter() < deadline:
            if rng.random() < 0.2:
                entry = f"entry_{rng.randrange(n_entries):07d}"
                body = json.dumps({"answer": f"An edited answer {rng.random()}."}).encode()
                head = (f"PUT /api/v1/datasets/{DATASET}/entries/{entry} HTTP/1.1\r\nHost: {host}\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
                request, kind = head + body, "write"
            else:
                query = f"{rng.choice(READS)}&page={rng.randint(1, 20)}"
                request = (f"GET /api/v1/datasets/{DATASET}/entries?{query} HTTP/1.1\r\nHost: {host}\r\n"
                           "\r\n").encode()
                kind = "read"
            t0 = time.perf_counter()
            writer.write(request)
            head_bytes = await reader.readuntil(b"\r\n\r\n")
            status = int(head_bytes.split(b" ", 2)[1])
            length = 0
            for line in head_bytes.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            out[kind].append(time.perf_counter() - t0)
            if status != 200:
                errors.append(f"{kind} {status}")
    finally:
        writer.close()


def load_main(spec: dict) -> None:
    url = urlsplit(spec["base"])
    out: dict[str, list[float]] = {"read": [], "write": []}
    errors: list[str] = []

    async def main() -> float:
        deadline = time.perf_counter() + spec["seconds"]
        t0 = time.perf_counter()
        await asyncio.gather(*(_connection(url.hostname or "127.0.0.1", url.port or 80, spec["entries"], deadline,
                                           out, errors, i) for i in range(spec["connections"])))
        return time.perf_counter() - t0

    cpu0 = time.process_time()
    elapsed = asyncio.run(main())
    cpu = time.process_time() - cpu0

    def pct(values: list[float], q: float) -> float:
        values = sorted(values)
        return 1000 * values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")

    total = len(out["read"]) + len(out["write"])
    print(json.dumps({"rps": total / elapsed, "reads": len(out["read"]), "writes": len(out["write"]),
                      "errors": errors[:5], "n_errors": len(errors),
                      "read_p50": pct(out["read"], 0.5), "read_p99": pct(out["read"], 0.99),
                      "write_p50": pct(out["write"], 0.5), "write_p99": pct(out["write"], 0.99),
                      "all_p99": pct(out["read"] + out["write"], 0.99), "client_cpu": cpu / elapsed}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=8, help="waitress threads of the server")
    ap.add_argument("--load", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.load:
        load_main(json.loads(args.load))
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_dataset(data, args.entries)
        proc, base, _ = start_server(data, args.threads, Path(tmp) / "server.log")
        try:
            # warm the sorted indexes once, as a user's first page view would
            import urllib.request
            for query in READS:
                urllib.request.urlopen(f"{base}/datasets/{DATASET}/entries?{query}", timeout=120).read()
            spec = {"base": base.rsplit("/api/v1", 1)[0], "entries": args.entries,
                    "connections": args.connections, "seconds": args.seconds}
            load = subprocess.run([sys.executable, __file__, "--load", json.dumps(spec)], capture_output=True,
                                  text=True, check=True)
            r = json.loads(load.stdout)
        finally:
            stop_server(proc)
    print(f"\n`python bench/bench_api_writes.py --entries {args.entries} --connections {args.connections} "
          f"--seconds {args.seconds:g} --threads {args.threads}`; load average {os.getloadavg()[0]:.2f}\n")
    print("| requests/s | reads | writes | read p50 / p99 | write p50 / p99 | all p99 | client CPU | errors |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {r['rps']:,.0f} | {r['reads']:,} | {r['writes']:,} | {r['read_p50']:.1f} / {r['read_p99']:.1f} ms | "
          f"{r['write_p50']:.1f} / {r['write_p99']:.1f} ms | {r['all_p99']:.1f} ms | {r['client_cpu']:.0%} | "
          f"{r['n_errors']} {' '.join(r['errors'])} |")


if __name__ == "__main__":
    main()
