"""A reply as the simulator writes it on the wire: ``Reply`` (status, body, extra headers, when it goes
out and whether it resets the connection instead), OpenAI's error bodies, and ``_BadRequest``, the 400
that answer building raises.

Everything the simulator says is labelled: ``Server: dset-simulator`` and ``X-Dset-Simulated: 1`` on
every response, and ``"system_fingerprint": FINGERPRINT`` in completion bodies.
"""

from __future__ import annotations

from typing import Any

import msgspec

FINGERPRINT = "dset-simulator"
JSON = "application/json"
_REASONS = {
    100: "Continue", 200: "OK", 400: "Bad Request", 401: "Unauthorized", 402: "Payment Required",
    404: "Not Found", 405: "Method Not Allowed", 411: "Length Required", 413: "Payload Too Large",
    429: "Too Many Requests", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    505: "HTTP Version Not Supported",
}  # fmt: skip


class Reply:
    """One response: its status and body, extra header lines, the seconds before it goes out, whether it
    resets the connection instead, and whether it is a completion with content (counted when written)."""

    __slots__ = ("status", "body", "content_type", "headers", "delay", "reset", "completion", "tracked")

    def __init__(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = JSON,
        headers: str = "",
        delay: float = 0.0,
        reset: bool = False,
        completion: bool = False,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers  # extra header lines, each ending in CRLF
        self.delay = delay
        self.reset = reset
        self.completion = completion
        self.tracked = False  # a chat request counted in flight until this reply is sent or dropped

    def encode(self, keep_alive: bool) -> bytes:
        head = (
            f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Unknown')}\r\n"
            f"Content-Type: {self.content_type}\r\nContent-Length: {len(self.body)}\r\n"
            f"Server: dset-simulator\r\nX-Dset-Simulated: 1\r\n{self.headers}"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
        )
        return head.encode("latin-1") + self.body


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    return msgspec.json.encode({"error": {"message": message, "type": type_, "param": param, "code": code}})


def error(status: int, message: str, type_: str, code: str | None = None, **kw: Any) -> Reply:
    return Reply(status, error_body(message, type_, code), **kw)


class _BadRequest(Exception):
    """A request the simulator answers 400 ``invalid_request_error``; control flow inside this package
    (raised while a request is checked or its answer built, turned into its reply by the chat endpoint)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def reply(self) -> Reply:
        return Reply(400, error_body(self.message, "invalid_request_error", None, self.param))
