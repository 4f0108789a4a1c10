"""`dset simulate`: run the built-in OpenAI-compatible simulator on loopback.

Its flags are named for ``SimConfig``'s fields (``dest`` where the flag reads better otherwise); it
parses them, serves, and prints where it listens.
"""

from __future__ import annotations

import argparse
import sys

from dsetlog.simulator.config import (
    FAULT_KINDS,
    NOT_OPENAI_MODES,
    REASONING_FIELDS,
    STRUCTURED_MODES,
    config_from_options,
)
from dsetlog.simulator.server import serve_forever


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("simulate", help="run the built-in OpenAI-compatible LLM simulator (no API key, no network)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001, help="0 picks a free port (default 8001)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    for kind in FAULT_KINDS:
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
    # OpenAI's Batch API (/v1/files, /v1/batches)
    p.add_argument("--no-batch", action="store_false", dest="batch_supported",
                   help="answer /files and /batches 404, as a server without the Batch API does")
    p.add_argument("--batch-delay-s", type=float, default=0.0, metavar="S",
                   help="seconds from a batch's create to completed (default 0: done at the first retrieve)")
    p.add_argument("--batch-error-rate", type=float, default=0.0, metavar="P",
                   help="share of batch lines answered 500 into the error file")
    p.add_argument("--batch-expire", action="store_true",
                   help="batches expire at --batch-delay-s with half their lines done (the rest: batch_expired)")
    p.add_argument("--batch-max-requests", type=int, default=50_000, metavar="N",
                   help="lines a batch input file may hold (default OpenAI's 50,000)")
    p.add_argument("--batch-max-bytes", type=int, default=200 * 1024 * 1024, metavar="N",
                   help="bytes a batch input file may hold (default OpenAI's 200 MB)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_options(vars(args))  # the flags are named for its fields
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
