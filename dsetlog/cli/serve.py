"""`dset serve`: the REST API and its job worker, served by waitress (127.0.0.1:8000 by default).

    dset serve                               # http://127.0.0.1:8000/api/v1
    dset serve --simulate                    # every model answered by the built-in simulator
    DSET_API_TOKEN=... dset serve --host 0.0.0.0   # any other address needs a token

A non-loopback ``--host`` without ``DSET_API_TOKEN`` is refused (exit 2): the API writes to the log and
spends money on model calls. The token is read from the environment (or ``.env``), never from the
command line, where other users of the machine could see it. On a clean stop (Ctrl-C, SIGTERM) running
jobs are interrupted (they resume at the next start) and the read model's snapshot is saved, so the next
start folds only what came after it.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys
import time
from typing import Any

from dsetlog import redaction
from dsetlog.cli.options import EXIT_OK, add_data_option, data_dir, simulator_url
from dsetlog.errors import UsageError

_log = logging.getLogger("dsetlog.serve")
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="the REST API and job worker, served by waitress (127.0.0.1:8000)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; any other "
                                                       "address needs DSET_API_TOKEN)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    add_data_option(p)
    p.add_argument("--threads", type=int, default=8, help="request threads (default 8)")
    p.add_argument("--simulate", action="store_true", help="answer every model call with the built-in simulator")
    p.add_argument("--sim-latency-ms", type=float, default=20.0, help="the simulator's latency (default 20)")
    p.add_argument("--max-body-mb", type=float, default=10.0, help="largest request body in MB (default 10)")
    p.add_argument("--max-jobs", type=int, default=4, help="jobs running at once (default 4; others wait)")
    p.add_argument("--rpm", type=int, default=0, help="requests per minute per provider, all jobs together (0: none)")
    p.add_argument("--tpm", type=int, default=0, help="tokens per minute per provider, all jobs together (0: none)")
    p.add_argument("--no-worker", action="store_true", help="serve reads and accept jobs without running them")
    p.set_defaults(func=run)


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


SWITCH_INTERVAL_S = 0.0002


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    # waitress's threads take turns on the GIL: at Python's default 5 ms a request waits behind every
    # CPU-bound one in front of it. 0.2 ms took 32 connections of 80% reads / 20% writes from 883 to 1,692
    # requests/s and the p99 from 112 to 38 ms (bench/bench_api_writes.py)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    from dsetlog.llm.providers import load_env

    load_env()
    token = os.environ.get("DSET_API_TOKEN") or None
    if not is_loopback(args.host) and not token:
        raise UsageError(f"--host {args.host} is reachable from other machines: set DSET_API_TOKEN (a long random "
                         "secret; clients send it as `Authorization: Bearer <token>`), or serve on 127.0.0.1")
    if args.threads < 1 or args.max_jobs < 1 or args.max_body_mb <= 0 or not 0 <= args.port <= 65535:
        raise UsageError("--threads and --max-jobs must be >= 1, --max-body-mb > 0, --port 0-65535")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # keys and tokens never reach the server's output either
        handler.addFilter(redaction.RedactingFilter())
    logging.getLogger("httpx").setLevel(logging.WARNING)
    import waitress

    from api.app import create_app

    data = data_dir(args)
    max_body = int(args.max_body_mb * 2**20)

    def on_signal(signum: int, frame: Any) -> None:
        raise SystemExit(0)  # ends waitress's loop in the main thread

    with simulator_url(args.simulate, latency_ms=args.sim_latency_ms, jitter_ms=args.sim_latency_ms / 4) as sim_url:
        app = create_app(data, token=token, max_body=max_body, simulator_url=sim_url, start_worker=not args.no_worker,
                         max_jobs=args.max_jobs, rpm=args.rpm, tpm=args.tpm)
        rm = app.ctx.rm
        try:
            server = waitress.create_server(app, host=args.host, port=args.port, threads=args.threads,
                                            max_request_body_size=max_body + 65536, ident="dset",
                                            clear_untrusted_proxy_headers=True, channel_timeout=300)
        except OSError as exc:
            app.close()
            raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
        host = f"[{args.host}]" if ":" in args.host else args.host
        port = getattr(server, "effective_port", args.port)
        simulated = " with simulated models (--simulate)" if sim_url else ""
        auth = "; bearer token required" if token else ""
        print(f"dset serve: http://{host}:{port}/api/v1 (data {data}, {rm.seq:,} events"
              f"{', from snapshot' if rm.snapshot_used else ''}{simulated}{auth}); ready in "
              f"{time.monotonic() - started:.2f} s", flush=True)
        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            server.run()
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            print("dset serve: stopping (running jobs resume at the next start)", file=sys.stderr, flush=True)
            server.close()
            app.close(save_snapshot=True)
    return EXIT_OK
