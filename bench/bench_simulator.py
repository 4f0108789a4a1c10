"""How many chat-completion requests per second the simulator sustains.

Runs the simulator in its own process (as ``dset simulate`` does; ``--mode thread`` runs it on a
thread of this process instead, as ``dset generate --simulate`` does) and drives it from many
keep-alive connections with a raw asyncio HTTP/1.1 client, each request a distinct prompt.

Besides requests/s it prints the server's CPU time per request (Linux /proc), because on a small
machine the client can saturate its own core first: ``capacity`` = 1 / server CPU per request is
what the simulator could serve if it had a core to itself.

    python bench/bench_simulator.py                   # concurrency 64 and 256, latency 0 and 100 ms
    python bench/bench_simulator.py -c 256 -l 100 -d 10
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec  # noqa: E402

from dsetlog.simulator import SimConfig, Simulator  # noqa: E402
from dsetlog.simulator.server import serve_forever  # noqa: E402

PASSAGE = (
    "The mitochondrion is the site of aerobic respiration in eukaryotic cells. "
    "It has an outer membrane and a folded inner membrane called the cristae. "
    "The electron transport chain on the inner membrane pumps protons into the intermembrane space. "
    "ATP synthase uses the resulting gradient to make ATP from ADP and phosphate. "
    "Mitochondria carry their own small circular genome, inherited from the mother."
)


def _serve(config: SimConfig, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    serve_forever(config, host="127.0.0.1", port=0, ready=queue.put)


@dataclass
class Server:
    base_url: str
    host: str
    port: int
    pid: int | None
    stop: object = field(repr=False)


def start_server(config: SimConfig, mode: str) -> Server:
    if mode == "thread":
        sim = Simulator(config)
        url = sim.start()
        pid = None
        stop = sim.stop
    else:
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=_serve, args=(config, queue), daemon=True)
        proc.start()
        url = queue.get(timeout=30)
        pid = proc.pid

        def stop() -> None:
            proc.terminate()  # SIGTERM: serve_forever shuts down cleanly
            proc.join(10)

    hostport = url.split("//", 1)[1].split("/", 1)[0]
    host, port = hostport.rsplit(":", 1)
    return Server(url, host, int(port), pid, stop)


def cpu_seconds(pid: int | None) -> float:
    """User+system CPU of a process (or of this process when pid is None)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_requests(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        body = msgspec.json.encode(
            {
                "model": "deepseek-chat",
                "messages": [
                    {"role": "system", "content": "You answer questions about a passage."},
                    {"role": "user", "content": f"Question {i}: what does this passage say?\n\n{PASSAGE}"},
                ],
            }
        )
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer sk-bench\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


async def worker(
    host: str,
    port: int,
    requests: list[bytes],
    offset: int,
    until: list[float],
    lat: list[float],
    errors: list[int],
) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    done = 0
    i = offset
    try:
        while time.perf_counter() < until[0]:
            t0 = time.perf_counter()
            writer.write(requests[i % len(requests)])
            i += 7
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors[0] += 1
            lat.append(time.perf_counter() - t0)
            done += 1
    finally:
        writer.close()
    return done


async def drive(server: Server, concurrency: int, duration: float, requests: list[bytes]) -> dict[str, float]:
    warmup = min(1.0, duration / 4)
    until = [time.perf_counter() + warmup + duration]
    lat: list[float] = []
    errors = [0]
    tasks = [
        asyncio.create_task(worker(server.host, server.port, requests, i, until, lat, errors))
        for i in range(concurrency)
    ]
    await asyncio.sleep(warmup)
    n0, lat_mark = len(lat), len(lat)
    cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    # Workers finish their in-flight request after `until`; those few count, the time is real.
    n = len(lat) - n0
    cpu = cpu_seconds(server.pid) - cpu0
    window = sorted(lat[lat_mark:])
    return {
        "rps": n / elapsed,
        "p50_ms": 1000 * statistics.median(window) if window else float("nan"),
        "p99_ms": 1000 * window[int(0.99 * (len(window) - 1))] if window else float("nan"),
        "errors": errors[0],
        "cpu_per_req_us": 1e6 * cpu / n if n else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-c", "--concurrency", type=int, nargs="+", default=[64, 256])
    parser.add_argument("-l", "--latency-ms", type=float, nargs="+", default=[0.0, 100.0])
    parser.add_argument("-d", "--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--mode", choices=["process", "thread"], default="process")
    args = parser.parse_args()

    try:
        import uvloop  # type: ignore[import-not-found]

        loop_name = "uvloop"
    except ImportError:
        uvloop = None
        loop_name = "asyncio"
    requests = make_requests(20_000)
    print(f"simulator bench: mode={args.mode}, client loop={loop_name}, cores={os.cpu_count()}, "
          f"python {sys.version.split()[0]}, {args.duration:g} s per run")  # fmt: skip
    print(f"{'latency':>9} {'conc':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
          f"{'srv CPU/req':>11} {'capacity':>9} {'bound':>8}")  # fmt: skip
    for latency in args.latency_ms:
        server = start_server(SimConfig(latency_ms=latency), args.mode)
        try:
            for conc in args.concurrency:
                runner = uvloop.run if uvloop is not None else asyncio.run
                r = runner(drive(server, conc, args.duration, requests))
                capacity = f"{1e6 / r['cpu_per_req_us']:.0f}" if args.mode == "process" else "n/a"
                bound = f"{conc / (latency / 1000):.0f}" if latency > 0 else "-"
                cpu_col = f"{r['cpu_per_req_us']:.0f} us" if args.mode == "process" else "n/a"
                print(
                    f"{latency:>6.0f} ms {conc:>5} {r['rps']:>9.0f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
                    f"{r['errors']:>6} {cpu_col:>11} {capacity:>9} {bound:>8}",
                    flush=True,
                )
        finally:
            server.stop()  # type: ignore[operator]
    print("bound = concurrency / latency, the most any server could do at that latency; "
          "capacity = 1 / server CPU per request.")  # fmt: skip


if __name__ == "__main__":
    main()
