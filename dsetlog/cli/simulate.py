"""`dset simulate`: run the built-in OpenAI-compatible simulator on loopback."""

from __future__ import annotations

import argparse
import sys

from dsetlog.simulator.server import (
    NOT_OPENAI_MODES,
    REASONING_FIELDS,
    STRUCTURED_MODES,
    SimConfig,
    serve_forever,
)


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
    # Quirks of real servers, to test a client against each offline.
    p.add_argument("--structured", choices=STRUCTURED_MODES, default="openai",
                   help="response_format handling: openai (json_schema and json_object), llamacpp "
                        "(llama-cpp-python's server: json_schema is a 500, json_object takes a schema), "
                        "text (no response_format at all: 400)")
    p.add_argument("--reasoning-field", choices=REASONING_FIELDS, default="reasoning_content",
                   help="where a reasoning model's reasoning goes: message.reasoning_content (DeepSeek), "
                        "message.reasoning (vLLM, OpenRouter), inline <think> in the content, or nowhere")
    p.add_argument("--rate-limit", type=float, default=0.0, metavar="RPS", dest="rate_limit_rps",
                   help="token-bucket limit on chat requests per second, answered 429 (default 0: off)")
    p.add_argument("--rate-limit-burst", type=float, default=0.0, metavar="N",
                   help="bucket size (default 0: one second's worth, at least 1)")
    p.add_argument("--no-rate-limit-headers", action="store_false", dest="rate_limit_headers",
                   help="leave out the x-ratelimit-* headers (429s keep Retry-After and retry-after-ms)")
    p.add_argument("--echo-key", action="store_true",
                   help="with --require-api-key, a wrong key's 401 echoes the key (to test redaction)")
    p.add_argument("--not-openai", choices=[m for m in NOT_OPENAI_MODES if m], default="",
                   help="answer the API paths as a wrong base URL does: an HTML page (200) or a plain 404")
    p.add_argument("--context-tokens", type=int, default=0, metavar="N",
                   help="answer 400 context_length_exceeded when prompt + max_tokens exceeds N (default 0: off)")
    p.add_argument("--max-body-bytes", type=int, default=0, metavar="N",
                   help="answer 413 to a chat request body above N bytes (default 0: no limit)")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """The SimConfig the flags describe; raises ValueError for values it refuses."""
    return SimConfig(
        seed=args.seed, latency_ms=args.latency_ms, jitter_ms=args.jitter_ms,
        rate_429=args.rate_429, rate_500=args.rate_500, rate_hang=args.rate_hang,
        rate_malformed=args.rate_malformed, rate_empty=args.rate_empty, rate_reset=args.rate_reset,
        retry_after_s=args.retry_after_s, hang_s=args.hang_s, max_faults_per_prompt=args.max_faults_per_prompt,
        require_api_key=args.require_api_key, quota_exhausted=args.quota_exhausted,
        structured=args.structured, reasoning_field=args.reasoning_field,
        rate_limit_rps=args.rate_limit_rps, rate_limit_burst=args.rate_limit_burst,
        rate_limit_headers=args.rate_limit_headers, echo_key=args.echo_key, not_openai=args.not_openai,
        context_tokens=args.context_tokens, max_body_bytes=args.max_body_bytes,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"dset simulate: {exc}", file=sys.stderr)
        return 2

    def ready(base_url: str) -> None:
        print(f"dset simulator (simulated answers, not a real model) listening on {base_url}", flush=True)

    try:
        serve_forever(config, host=args.host, port=args.port, ready=ready)
    except KeyboardInterrupt:
        pass
    return 0
