"""The simulator's server: ``Simulator`` (start/stop on a thread of its own, or ``await serve()`` on the
caller's loop; a context manager; its stats and request log), the routes it answers, and
``serve_forever`` for ``dset simulate``.

Routes: ``POST /v1/chat/completions`` (``chat.Chat``), ``GET /v1/models`` and ``/v1/models/{id}``,
OpenAI's Batch API (``batches.Batches``: ``/v1/files`` and ``/v1/batches``, unless
``SimConfig.batch_supported`` is False), and the simulator's own ``GET /_sim/stats``,
``GET /_sim/requests?last=N`` and ``POST /_sim/reset``; the ``/v1`` prefix is optional.  ``stats()["max_in_flight"]`` is the most chat requests it was serving at
once (from the request read to its answer sent); ``requests(last=N)`` / ``GET /_sim/requests?last=N``
return the decoded JSON bodies of the last chat requests (a bounded log of ``SimConfig.request_log``
bodies), to see what a client sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable
from typing import Any

import msgspec

from dsetlog.simulator.batches import Batches
from dsetlog.simulator.chat import Chat
from dsetlog.simulator.config import SimConfig
from dsetlog.simulator.faults import auth_refusal, not_openai_reply
from dsetlog.simulator.protocol import Connection
from dsetlog.simulator.reply import FINGERPRINT, Reply, error
from dsetlog.simulator.stats import Stats

__all__ = ["SimConfig", "Simulator", "serve_forever"]


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class Simulator:
    """The simulator server.  ``start()`` runs it on a daemon thread with its own event loop;
    ``await serve()`` runs it on the caller's loop instead.

    ``stats()``: ``requests`` counts chat-completion requests received (whatever their outcome);
    ``completions`` counts 200 answers with content actually written; ``faults`` counts injected
    faults and 401/402 refusals; ``rate_limited`` counts 429s from the ``rate_limit_rps`` bucket (not
    faults, and not attempts); ``file_uploads``, ``batch_creates`` and ``batch_cancels`` count the Batch
    API's accepted submissions and ``batch_lines`` the batch lines answered (never in ``requests``);
    ``by_prompt`` maps prompt key to requests seen for it (this is also
    the counter behind server-side attempt numbering, so ``reset_stats()`` restarts attempts too).
    """

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config if config is not None else SimConfig()
        self.base_url = ""
        self._stats = Stats(self.config.request_log)
        self._chat = Chat(self.config, self._stats)
        self._batches = Batches(self.config, self._stats, self._chat)
        self._conns: set[Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._models_body = msgspec.json.encode(
            {"object": "list", "data": [_model_obj(m) for m in self.config.models]}
        )

    # -- lifecycle

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = _new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.serve(host, port, ready=lambda _url: ready.set()))
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                failure.append(exc)
                ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="dset-simulator", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=30):
            raise RuntimeError("simulator did not start within 30 s")
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self.base_url

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if thread.is_alive():
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(self._request_stop)
            thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> Simulator:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def serve(
        self, host: str = "127.0.0.1", port: int = 0, *, ready: Callable[[str], None] | None = None
    ) -> None:
        """Serve on the running loop until ``stop()`` (or ``_request_stop`` on this loop)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop_event = asyncio.Event()
        server = await loop.create_server(lambda: Connection(self._dispatch, self._stats, self._conns), host, port, backlog=4096, reuse_address=True)
        try:
            bound = server.sockets[0].getsockname()[1]
            self.base_url = f"http://{_url_host(host)}:{bound}/v1"
            if ready is not None:
                ready(self.base_url)
            await self._stop_event.wait()
        finally:
            server.close()
            # Hanging answers are timers, not tasks: aborting their connections cancels them.
            for conn in list(self._conns):
                conn.abort()
            await server.wait_closed()

    def _request_stop(self) -> None:
        if self._stop_event is not None:
            self._stop_event.set()

    # -- stats

    def stats(self) -> dict[str, Any]:
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        with self._stats.lock:
            self._stats.clear()

    def requests(self, last: int | None = None) -> list[Any]:
        """The decoded JSON bodies of the last ``last`` chat requests (all those kept when None), oldest first.

        At most ``SimConfig.request_log`` are kept; ``reset_stats()`` forgets them.
        """
        return self._stats.logged(last)

    # -- routing

    def _dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        path = target.split("?", 1)[0].rstrip("/") or "/"
        if self.config.not_openai and not path.startswith("/_sim/"):
            return not_openai_reply(self.config.not_openai)
        if path in ("/v1/chat/completions", "/chat/completions"):
            if method != "POST":
                return _not_allowed("POST")
            return self._chat.handle(headers, body)
        if path in ("/v1/models", "/models"):
            if method != "GET":
                return _not_allowed("GET")
            return auth_refusal(self.config, headers) or Reply(200, self._models_body)
        if path.startswith(("/v1/models/", "/models/")) and method == "GET":
            denied = auth_refusal(self.config, headers)
            if denied:
                return denied
            model = path.split("/models/", 1)[1]
            if model in self.config.models:
                return Reply(200, msgspec.json.encode(_model_obj(model)))
            return error(
                404, f"The model '{model}' does not exist", "invalid_request_error", "model_not_found"
            )
        if path == "/_sim/stats":
            return Reply(200, msgspec.json.encode(self.stats())) if method == "GET" else _not_allowed("GET")
        if path == "/_sim/requests":
            if method != "GET":
                return _not_allowed("GET")
            query = dict(p.partition("=")[::2] for p in target.partition("?")[2].split("&") if p)
            try:
                last = int(query["last"]) if "last" in query else None
            except ValueError:
                return error(400, "last must be a whole number", "invalid_request_error")
            return Reply(200, msgspec.json.encode({"requests": self.requests(last)}))
        if path == "/_sim/reset":
            if method != "POST":
                return _not_allowed("POST")
            self.reset_stats()
            return Reply(200, b'{"ok":true}')
        if self.config.batch_supported:
            reply = self._batches.handle(method, target, headers, body)
            if reply is not None:
                return reply
        return error(404, f"Unknown path {path}", "invalid_request_error", "not_found")


def _model_obj(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 0, "owned_by": FINGERPRINT}


def _not_allowed(allow: str) -> Reply:
    return error(405, "Method not allowed", "invalid_request_error", headers=f"Allow: {allow}\r\n")


def serve_forever(
    config: SimConfig, *, host: str, port: int, ready: Callable[[str], None] | None = None
) -> None:
    """Run the simulator in this thread until SIGINT/SIGTERM; ``ready(base_url)`` once listening."""
    sim = Simulator(config)
    loop = _new_event_loop()

    async def main() -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, sim._request_stop)
        await sim.serve(host, port, ready=ready)

    try:
        loop.run_until_complete(main())
    except KeyboardInterrupt:
        pass
    finally:
        loop.close()
