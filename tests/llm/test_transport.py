"""The client's one POST under the SDK: the SDK's headers, an environment proxy honoured (and NO_PROXY), through
a real forwarding proxy on loopback in front of the simulator."""

from __future__ import annotations

import asyncio
import http.client
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from dsetlog.llm.client import LLMClient
from dsetlog.llm.providers import resolve
from dsetlog.simulator.server import Simulator


class _Proxy(ThreadingHTTPServer):
    """A forwarding HTTP proxy: takes absolute-URI requests, sends them on, and remembers what it saw."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.seen: list[tuple[str, dict[str, str]]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Forward(BaseHTTPRequestHandler):
    server: _Proxy

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        self.server.seen.append((self.path, dict(self.headers.items())))
        target = urlsplit(self.path)  # a proxy is sent the whole URL
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "host")}
        conn.request("POST", target.path, body=body, headers=headers)
        reply = conn.getresponse()
        data = reply.read()
        self.send_response(reply.status)
        for name, value in reply.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[_Proxy]:
    server = _Proxy()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _ask(sim: Simulator) -> str:
    provider = resolve("vllm", base_url=sim.base_url, model="sim-chat", env={})

    async def go() -> str:
        client = LLMClient(provider, concurrency=4)
        try:
            return (await client.complete([{"role": "user", "content": "What is the water cycle?"}])).content
        finally:
            await client.close()

    return asyncio.run(go())


def test_calls_go_through_the_environment_proxy_with_the_sdks_headers(
        proxy: _Proxy, make_simulator: Callable[..., Simulator], monkeypatch: pytest.MonkeyPatch) -> None:
    sim = make_simulator()
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    assert _ask(sim).startswith("Simulated answer: ")
    assert len(proxy.seen) == 1
    path, headers = proxy.seen[0]
    assert path == f"{sim.base_url}/chat/completions"
    assert headers["User-Agent"].startswith("AsyncOpenAI/Python ")  # the SDK's own headers, as it sends them
    assert headers["X-Stainless-Async"] == "async:asyncio" and headers["X-Dset-Attempt"] == "1"
    assert headers["Authorization"].startswith("Bearer ")


def test_no_proxy_sends_the_call_direct(proxy: _Proxy, make_simulator: Callable[..., Simulator],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    sim = make_simulator()
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert _ask(sim).startswith("Simulated answer: ")
    assert proxy.seen == [] and sim.stats()["requests"] == 1
