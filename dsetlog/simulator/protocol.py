"""The simulator's HTTP/1.1: one ``Connection`` (an ``asyncio.Protocol``) per client, parsing requests
from the byte stream (keep-alive, pipelining, ``Expect: 100-continue``, Content-Length bodies) and
sending their replies in order.

Hand-written on a bare protocol because a web framework would cost more per request than all the answer
building does; a delayed reply is a ``loop.call_later`` timer, not a task, and a reply that resets the
connection closes it with an RST.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable

from dsetlog.simulator.reply import Reply, error
from dsetlog.simulator.stats import Stats

_log = logging.getLogger(__name__)

_MAX_HEAD = 64 * 1024
# A batch input file may be 200 MB (SimConfig.batch_max_bytes), and one over it must reach the batch's
# validation rather than die here; a chat request body never comes near this.
_MAX_BODY = 256 * 1024 * 1024

# How a connection gets the reply to one request: (method, target, headers, body) -> Reply.
Dispatch = Callable[[str, str, dict[str, str], bytes], Reply]


class Connection(asyncio.Protocol):
    """One client connection: parses requests from the byte stream and answers them in order."""

    def __init__(self, dispatch: Dispatch, stats: Stats, conns: set[Connection]) -> None:
        self.dispatch = dispatch
        self.stats = stats
        self.conns = conns  # the server's open connections, aborted when it stops
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False
        self.closed = False
        self.eof = False
        self.timer: asyncio.TimerHandle | None = None
        self.pending: Reply | None = None  # the delayed reply the timer will send
        self.continued = False
        self.pending_keep_alive = True

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.conns.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._drop_pending()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._drain()

    def eof_received(self) -> bool:
        self.eof = True
        # Keep the write side open while an answer is still scheduled for this connection.
        return self.busy

    # request handling

    def abort(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._drop_pending()
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True

    def _drop_pending(self) -> None:
        if self.pending is not None:
            self.stats.ended(self.pending)
            self.pending = None

    def _drain(self) -> None:
        while not self.busy and not self.closed:
            parsed = self._parse()
            if parsed is None:
                break
            method, path, headers, body, keep_alive = parsed
            try:
                reply = self.dispatch(method, path, headers, body)
            except Exception as exc:
                # A bug here must not kill the connection silently: answer 500 and say what broke.
                _log.exception("simulator failed on %s %s", method, path)
                reply = error(500, f"simulator internal error: {exc!r}", "server_error")
            if reply.delay > 0:
                self.busy = True
                self.pending_keep_alive = keep_alive
                loop = asyncio.get_running_loop()
                self.pending = reply
                self.timer = loop.call_later(reply.delay, self._fire, reply)
                return
            self._send(reply, keep_alive)
        if self.eof and not self.busy and not self.closed and self.transport is not None:
            self.transport.close()
            self.closed = True

    def _fire(self, reply: Reply) -> None:
        self.timer = None
        self.pending = None
        self.busy = False
        if self.closed:
            self.stats.ended(reply)
            return
        self._send(reply, self.pending_keep_alive)
        if not self.closed:
            self._drain()

    def _send(self, reply: Reply, keep_alive: bool) -> None:
        self.stats.ended(reply)
        transport = self.transport
        if transport is None or self.closed:
            return
        if reply.reset:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # SO_LINGER (on, 0 s): close() sends RST, so the client sees a reset, not a clean EOF.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
            self.closed = True
            return
        keep_alive = keep_alive and not self.eof
        transport.write(reply.encode(keep_alive))
        if reply.completion:
            self.stats.count("completions")
        if not keep_alive:
            transport.close()
            self.closed = True

    def _fail(self, status: int, message: str) -> None:
        """A protocol error: answer once and close, because the byte stream can't be trusted now."""
        self._send(error(status, message, "invalid_request_error"), keep_alive=False)

    def _parse(self) -> tuple[str, str, dict[str, str], bytes, bool] | None:
        buf = self.buf
        while buf[:2] == b"\r\n":
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _MAX_HEAD:
                self._fail(431, "Request headers too large")
            return None
        if end > _MAX_HEAD:
            self._fail(431, "Request headers too large")
            return None
        lines = buf[:end].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._fail(400 if len(parts) != 3 else 505, "Malformed request line")
            return None
        method, path, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                self._fail(400, "Malformed header line")
                return None
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._fail(411, "Chunked request bodies are not supported; send Content-Length")
            return None
        try:
            length = int(headers.get("content-length", "0"))
            if length < 0:
                raise ValueError
        except ValueError:
            self._fail(400, "Invalid Content-Length")
            return None
        if length > _MAX_BODY:
            self._fail(413, "Request body too large")
            return None
        start = end + 4
        if len(buf) < start + length:
            if not self.continued and headers.get("expect", "").lower() == "100-continue":
                self.continued = True
                assert self.transport is not None
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return None
        body = bytes(buf[start : start + length])
        del buf[: start + length]
        self.continued = False
        conn = headers.get("connection", "").lower()
        keep_alive = "close" not in conn if version == "HTTP/1.1" else "keep-alive" in conn
        return method, path, headers, body, keep_alive
