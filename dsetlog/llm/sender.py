"""Sending chat-completion requests: one aiohttp pool (:class:`Pool`), in this process or in a send process of
its own on another core (:class:`SendProcess`).

When a model server answers fast, the client's CPU caps the rows a second, and aiohttp's request machinery is
the largest single part of it (~40% of `dset generate`'s CPU a row). A send process takes that part to a second
core: the run's process keeps everything that decides and records (retries, rate control, scoring, the log),
and hands each request's bytes over a socket to a process that does nothing but POST them and hand back the
status, headers and body. What the process costs in CPU to talk to it (a frame each way) is a small share of
what it takes off.

Nothing about durability changes: the send process holds no state. If the run's process dies (kill -9), the
socket closes and the send process exits, with the calls in flight lost as they would be anyway; if the send
process dies, the calls it held fail as connection errors (retried) and the run sends from its own pool again.

This module imports aiohttp, httpx2 (for the SDK's certificates) and msgspec, never the openai SDK: a send
process starts in a fraction of the run's start-up. ``python -m dsetlog.llm.sender FD`` is the send process.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import signal
import socket
import ssl
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import msgspec
from multidict import CIMultiDict  # aiohttp's own: header names compare without case, as in its replies

from dsetlog.errors import DsetError, Kind

_HEADER = 4  # a frame: its length (4 bytes, big-endian), then msgpack
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode
START_TIMEOUT_S = 30.0  # a send process not ready by then is given up: the run sends from its own pool
GRACE_S = 30.0  # beyond the call's own timeout (the send process enforces that), before the run gives up a call

Sent = tuple[int, Mapping[str, str], bytes]  # status, headers, body


class SendFailed(DsetError):
    """A request that got no HTTP reply: ``failure`` "timeout" or "connection"; the cause is the transport's error
    (a refused connection is a ``ConnectionRefusedError`` somewhere down the cause chain). The client turns it
    into the SDK's own error before anyone else sees it."""

    kind = Kind.UNAVAILABLE  # no reply this time: the same call may get one later

    def __init__(self, failure: str, message: str) -> None:
        super().__init__(message)
        self.failure, self.message = failure, message


def env_proxy(url: str) -> str | None:
    """The proxy HTTPS_PROXY / HTTP_PROXY / NO_PROXY name for ``url``, as the SDK's own transport honours them.

    Looked up once per pool: aiohttp's ``trust_env`` does it (and reads ~/.netrc) in a thread on every
    request, which cost as much CPU as the rest of the request."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    return None if proxy is None or urllib.request.proxy_bypass(parts.hostname or "") else proxy


@functools.cache
def ssl_context() -> ssl.SSLContext:
    """The certificates the SDK would trust (SSL_CERT_FILE and SSL_CERT_DIR included), built once a process."""
    return httpx2.create_ssl_context(trust_env=True)


def refused(exc: BaseException) -> bool:
    """Was the connection refused (nothing listens there), as opposed to reset or timed out?"""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError) or getattr(seen, "errno", None) == errno.ECONNREFUSED:
            return True
        if isinstance(seen, OSError) and "connect call failed" in str(seen).lower():
            return True
        os_error = getattr(seen, "os_error", None)  # aiohttp's ClientConnectorError wraps it
        if isinstance(os_error, BaseException) and os_error is not seen:
            seen = os_error
            continue
        seen = seen.__cause__ or seen.__context__
    return False


class Pool:
    """One endpoint's aiohttp connection pool, sending ``headers`` with every request; made in the running loop."""

    def __init__(self, url: str, headers: Mapping[str, str], *, timeout: float, connections: int) -> None:
        self.url = url
        self._session = aiohttp.ClientSession(
            headers=dict(headers), proxy=env_proxy(url),
            cookie_jar=aiohttp.DummyCookieJar(),  # an API's cookies mean nothing to us; keeping them costs CPU
            connector=aiohttp.TCPConnector(limit=connections, ssl=ssl_context()),
            timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=timeout),
        )

    async def send(self, body: bytes, attempt: int) -> Sent:
        """POST the body: (status, headers, content) whatever the status; SendFailed when no reply came."""
        try:
            # The simulator decides faults per (prompt, attempt); real APIs ignore the header.
            async with self._session.post(self.url, data=body, headers={"X-Dset-Attempt": str(attempt)}) as resp:
                return resp.status, resp.headers, await resp.read()
        except TimeoutError as exc:
            raise SendFailed("timeout", "the call timed out") from exc
        except aiohttp.ClientError as exc:
            raise SendFailed("connection", f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        await self._session.close()


class _Frames(asyncio.Protocol):
    """Length-prefixed msgpack frames over a stream socket, each handed to ``on_frame`` decoded."""

    def __init__(self, on_frame: Callable[[Any], None], on_lost: Callable[[], None]) -> None:
        self._on_frame, self._on_lost = on_frame, on_lost
        self._buf = bytearray()
        self._out: list[bytes] = []  # frames sent in this turn of the loop: one write (one syscall) for them all
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        start, end = 0, len(buf)
        while end - start >= _HEADER:
            size = int.from_bytes(buf[start:start + _HEADER], "big")
            if end - start - _HEADER < size:
                break
            frame = _decode(memoryview(buf)[start + _HEADER:start + _HEADER + size])
            start += _HEADER + size
            self._on_frame(frame)
        del buf[:start]

    def send(self, frame: Any) -> None:
        data = _encode(frame)
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(len(data).to_bytes(_HEADER, "big"))
        self._out.append(data)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost()


class SendProcess:
    """A send process of the run's own: :meth:`send` as :class:`Pool`'s, the POST made in the other process.

    :meth:`start` spawns it (``python -m dsetlog.llm.sender``) and returns once its pool is ready; until then,
    and after it has gone, ``ready`` is False and the caller sends from its own pool. The socket is the only
    thing it shares with the run (the endpoint's headers, key included, go over it, never on a command line).
    """

    def __init__(self, url: str, headers: Mapping[str, str], *, timeout: float, connections: int) -> None:
        self._config = {"url": url, "headers": dict(headers), "timeout": timeout, "connections": connections}
        self._timeout = timeout
        self._calls: dict[int, asyncio.Future[Sent]] = {}
        self._next = 0
        self._frames: _Frames | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._started: asyncio.Future[None] | None = None
        self.ready = False  # calls may go to it: False before it is ready and for good once it is retired or gone

    async def start(self) -> bool:
        """Spawn the process and wait until it is ready; False when it could not be."""
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        try:
            env = dict(os.environ)
            root = str(Path(__file__).resolve().parents[2])  # where dsetlog is, however the run found it
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "dsetlog.llm.sender", str(theirs.fileno())], pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        except (OSError, ValueError):  # no interpreter to start, no descriptors to pass (not a POSIX system)
            ours.close()
            return False
        finally:
            theirs.close()
        self._started = loop.create_future()
        frames = self._frames = _Frames(self._reply, self._lost)
        try:
            await loop.create_unix_connection(lambda: frames, sock=ours)
            frames.send(self._config)
            await asyncio.wait_for(self._started, START_TIMEOUT_S)
        except (TimeoutError, OSError, NotImplementedError):  # (ConnectionError is an OSError)
            await self.close()
            return False
        self.ready = True
        return True

    async def send(self, body: bytes, attempt: int) -> Sent:
        if not self.ready:
            raise SendFailed("connection", "dset's send process has ended")
        loop = asyncio.get_running_loop()
        call_id = self._next = self._next + 1
        future: asyncio.Future[Sent] = loop.create_future()
        self._calls[call_id] = future
        assert self._frames is not None
        self._frames.send((call_id, attempt, body))
        # the send process times the call out itself; this only guards against it hanging
        guard = loop.call_later(self._timeout + GRACE_S, self._give_up, call_id)
        try:
            return await future
        finally:
            guard.cancel()
            self._calls.pop(call_id, None)

    def _give_up(self, call_id: int) -> None:
        future = self._calls.pop(call_id, None)
        if future is not None and not future.done():
            future.set_exception(SendFailed("timeout", "the call timed out (dset's send process did not answer)"))

    def _reply(self, frame: list[Any]) -> None:
        if frame[0] == 0:  # the process's pool is ready
            if self._started is not None and not self._started.done():
                self._started.set_result(None)
            return
        future = self._calls.pop(frame[0], None)
        if future is None or future.done():
            return  # given up already
        if frame[1]:
            future.set_result((frame[1], CIMultiDict(frame[2]), frame[3]))
            return
        failure = SendFailed(frame[2], frame[3])
        if frame[4]:  # the POST found the connection refused: the classification needs to know it
            failure.__cause__ = ConnectionRefusedError(errno.ECONNREFUSED, frame[3])
        future.set_exception(failure)

    def _lost(self) -> None:
        self.ready = False
        if self._started is not None and not self._started.done():
            self._started.set_exception(ConnectionError("dset's send process ended before it was ready"))
        calls, self._calls = self._calls, {}
        for future in calls.values():
            if not future.done():
                future.set_exception(SendFailed("connection", "dset's send process ended during the call"))

    async def retire(self) -> None:
        """Take no more calls; close once those held are answered (or given up)."""
        self.ready = False
        while self._calls:
            await asyncio.sleep(0.05)
        await self.close()

    async def close(self) -> None:
        """Close the socket (the process exits on its end of it) and wait for the process to end."""
        self.ready = False
        if self._frames is not None and self._frames.transport is not None:
            self._frames.transport.close()
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(None, proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --------------------------------------------------------------------------------------------------------------
# The send process


async def _serve(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ended = loop.create_future()
    pool: Pool | None = None
    tasks: set[asyncio.Task[None]] = set()

    async def post(call_id: int, attempt: int, body: bytes) -> None:
        assert pool is not None
        try:
            status, headers, content = await pool.send(body, attempt)
        except SendFailed as exc:
            frames.send((call_id, 0, exc.failure, exc.message, refused(exc)))
            return
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, the run must hear of its call
            frames.send((call_id, 0, "connection", f"{type(exc).__name__}: {exc}", False))
            return
        frames.send((call_id, status, [(str(k), v) for k, v in headers.items()], content))

    def on_frame(frame: Any) -> None:
        nonlocal pool
        if pool is None:  # the first frame is the pool's configuration
            pool = Pool(frame["url"], frame["headers"], timeout=frame["timeout"], connections=frame["connections"])
            frames.send((0,))
            return
        task = loop.create_task(post(*frame))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def on_lost() -> None:
        if not ended.done():
            ended.set_result(None)

    frames = _Frames(on_frame, on_lost)
    await loop.connect_accepted_socket(lambda: frames, sock=sock)
    await ended
    for task in list(tasks):
        task.cancel()
    if pool is not None:
        await pool.close()


def main(argv: list[str]) -> int:
    # Ctrl-C reaches the whole process group: the run's process stops and closes the socket, which ends this one
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=int(argv[0]))
    asyncio.run(_serve(sock))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
