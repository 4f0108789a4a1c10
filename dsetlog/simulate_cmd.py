"""`dset simulate`: run the built-in OpenAI-compatible simulator on loopback."""

from __future__ import annotations

import argparse

from dsetlog.simulator import SimConfig, serve_forever


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("simulate", help="run the built-in OpenAI-compatible LLM simulator (no API key, no network)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001, help="0 picks a free port (default 8001)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    for kind in ("429", "500", "hang", "malformed", "empty", "reset"):
        p.add_argument(f"--rate-{kind}", type=float, default=0.0, metavar="P",
                       help=f"probability of a {kind} fault per (prompt, attempt)")
    p.add_argument("--retry-after-s", type=float, default=1.0)
    p.add_argument("--hang-s", type=float, default=30.0)
    p.add_argument("--max-faults-per-prompt", type=int, default=2,
                   help="attempts from this number on never fault, so retries get through")
    p.add_argument("--require-api-key", metavar="KEY", help="answer 401 to any other bearer token")
    p.add_argument("--quota-exhausted", action="store_true", help="answer every request with 402")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = SimConfig(
        seed=args.seed, latency_ms=args.latency_ms, jitter_ms=args.jitter_ms,
        rate_429=args.rate_429, rate_500=args.rate_500, rate_hang=args.rate_hang,
        rate_malformed=args.rate_malformed, rate_empty=args.rate_empty, rate_reset=args.rate_reset,
        retry_after_s=args.retry_after_s, hang_s=args.hang_s, max_faults_per_prompt=args.max_faults_per_prompt,
        require_api_key=args.require_api_key, quota_exhausted=args.quota_exhausted,
    )

    def ready(base_url: str) -> None:
        print(f"dset simulator (simulated answers, not a real model) listening on {base_url}", flush=True)

    try:
        serve_forever(config, host=args.host, port=args.port, ready=ready)
    except KeyboardInterrupt:
        pass
    return 0
