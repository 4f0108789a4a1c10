"""One rate controller per endpoint, shared by every worker and job of the process.

A provider's limit is a property of the endpoint (and key), not of one worker: when each worker honours
``Retry-After`` alone, 64 of them keep hammering a 40 requests/s limit and most of what they send is
refused. The controller paces every call to an endpoint:

* ``--rpm`` / ``--tpm`` are ceilings the user knows: requests are spaced evenly (a burst of a minute's
  worth would be refused by a provider's token bucket), tokens are counted over a sliding minute;
* a 429 pauses every caller until the server's ``retry-after-ms`` / ``Retry-After`` /
  ``x-ratelimit-reset-requests`` allows, and lowers the sending rate: to what the server's
  ``x-ratelimit-*`` headers say it refills, or, without them, multiplicatively below the rate that was
  getting through (AIMD);
* while calls succeed the rate climbs back additively (about 5% a second), headers that show
  capacity lift it at once, and a rate learned without headers is forgotten after 30 s without a 429.

A 429 is not the item's fault: the retry loop does not count it against the item's retry budget.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import deque
from collections.abc import Mapping

_MIN_RATE = 0.2  # requests/s: a floor, so a run always moves
_DECREASE = 0.85  # AIMD: the rate after a 429, as a share of what was getting through
_INCREASE = 0.05  # AIMD: share of the rate added per second of successes
_HEADROOM = 0.97  # below the refill rate the server's headers give, for the jitter between us and it
_CUT_GAP_S = 1.0  # one cut per second: the 429s of calls already in flight describe the same excess
_FORGET_S = 30.0  # a rate learned without headers is dropped after this long without a 429
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_duration(text: str | None) -> float | None:
    """Seconds in OpenAI's reset format (``"1s"``, ``"250ms"``, ``"6m0s"``), or a plain number of seconds."""
    if not text:
        return None
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """The wait a 429 or 503 names: ``retry-after-ms``, ``Retry-After`` (seconds), else the request reset."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue  # an HTTP date: rare for APIs; the reset header or our own backoff decides
    remaining = headers.get("x-ratelimit-remaining-requests")
    if remaining is not None and remaining.strip() == "0":
        return parse_duration(headers.get("x-ratelimit-reset-requests"))
    if (headers.get("x-ratelimit-remaining-tokens") or "").strip() == "0":
        return parse_duration(headers.get("x-ratelimit-reset-tokens"))
    return None


def _refill_rate(headers: Mapping[str, str]) -> tuple[float, float] | None:
    """(requests/s the server's bucket refills at, requests left) from ``x-ratelimit-*``, when they say."""
    try:
        limit = float(headers["x-ratelimit-limit-requests"])
        remaining = float(headers["x-ratelimit-remaining-requests"])
    except (KeyError, ValueError):
        return None
    reset = parse_duration(headers.get("x-ratelimit-reset-requests"))
    used = limit - remaining
    if reset is None or reset <= 0 or used <= 0:
        return None
    return used / reset, remaining


class RateController:
    """Paces the calls to one endpoint; see the module's docstring. Thread-safe for asyncio loops in
    several threads (server jobs run on the worker's loop, the CLI on its own)."""

    def __init__(self, *, rpm: int = 0, tpm: int = 0) -> None:
        self.rpm, self.tpm = rpm, tpm
        self.rate: float | None = None  # learned requests/s; None: nothing learned, no pacing of our own
        self.paused_until = 0.0
        self.sent = 0
        self.limited = 0  # 429s seen
        self.reached = False  # some HTTP answer came from this endpoint (so it exists)
        self._next = 0.0  # the earliest time the next request may go under the current spacing
        self._last_cut = -1e9
        self._last_raise = time.monotonic()
        # send and 429 times of the last second: what was sent and not refused is what gets through
        self._sends: deque[float] = deque()
        self._refusals: deque[float] = deque()
        self._tokens: deque[tuple[float, int]] = deque()
        self._token_sum = 0
        self._lock = threading.Lock()

    def set_ceilings(self, *, rpm: int = 0, tpm: int = 0) -> None:
        with self._lock:
            self.rpm, self.tpm = rpm or self.rpm, tpm or self.tpm

    def _rate(self) -> float | None:
        ceilings = [r for r in (self.rate, self.rpm / 60 if self.rpm else None) if r]
        return min(ceilings) if ceilings else None

    async def acquire(self, estimated_tokens: int = 0) -> None:
        """Wait for this call's turn: past any pause, one spacing after the previous call, within tpm."""
        await self._turn()
        while True:
            with self._lock:
                wait = self._tpm_wait(time.monotonic(), estimated_tokens)
                if wait <= 0:
                    self.sent += 1
                    self._sends.append(time.monotonic())
                    return
            await asyncio.sleep(wait)

    def _getting_through(self, now: float) -> float:
        """Requests per second sent and not refused over the last second."""
        for times in (self._sends, self._refusals):
            while times and now - times[0] > 1.0:
                times.popleft()
        return float(max(1, len(self._sends) - len(self._refusals)))

    async def _turn(self) -> None:
        """Past any pause, then a slot of the current spacing. A pause that begins while a caller waits for
        its slot (a 429 meanwhile) sends it to the back: after the pause it takes a new slot, so the callers
        held by a pause leave it one spacing apart, not all at once."""
        reserved = False
        while True:
            with self._lock:
                now = time.monotonic()
                if self.paused_until > now:
                    wait, reserved = self.paused_until - now, False
                elif reserved:
                    return
                else:
                    rate = self._rate()
                    if rate is None:
                        return
                    slot = max(now, self._next)
                    self._next = slot + 1.0 / rate
                    wait, reserved = slot - now, True
                    if wait <= 0:
                        return
            await asyncio.sleep(wait)

    def _tpm_wait(self, now: float, estimated_tokens: int) -> float:
        if not self.tpm:
            return 0.0
        while self._tokens and now - self._tokens[0][0] >= 60:
            self._token_sum -= self._tokens.popleft()[1]
        if self._tokens and self._token_sum + estimated_tokens > self.tpm:
            return 60 - (now - self._tokens[0][0])
        self._tokens.append((now, estimated_tokens))
        self._token_sum += estimated_tokens
        return 0.0

    def succeeded(self, headers: Mapping[str, str] | None, *, estimated_tokens: int = 0,
                  actual_tokens: int = 0) -> None:
        """A call got through: let the rate climb (or follow the server's headers)."""
        with self._lock:
            now = time.monotonic()
            self.reached = True
            if self.tpm and actual_tokens and actual_tokens != estimated_tokens:
                self._tokens.append((now, actual_tokens - estimated_tokens))
                self._token_sum += actual_tokens - estimated_tokens
            refill = _refill_rate(headers) if headers is not None else None
            if refill is not None:
                rate, remaining = refill
                # a bucket with room to spare lets calls through faster than it refills, until it is low
                self.rate = None if remaining > max(4.0, rate) else max(_MIN_RATE, rate * _HEADROOM)
            elif self.rate is not None:
                if now - self._last_cut > _FORGET_S:
                    self.rate = None  # the limit may have been lifted: find out (a 429 brings the rate back)
                else:
                    self.rate += max(self.rate * _INCREASE, 0.5) * (now - self._last_raise)
            self._last_raise = now

    def rate_limited(self, headers: Mapping[str, str] | None, wait: float | None) -> None:
        """A 429: pause every caller for the time the server names, and send slower from then on."""
        with self._lock:
            now = time.monotonic()
            self.reached = True
            self.limited += 1
            self._refusals.append(now)
            if wait is not None:
                self.paused_until = max(self.paused_until, now + wait)
                self._next = max(self._next, self.paused_until)
            if now - self._last_cut < _CUT_GAP_S:
                return
            self._last_cut = now
            refill = _refill_rate(headers) if headers is not None else None
            getting_through = self._getting_through(now)
            if refill is None and self.rate is None and getting_through < 2:
                return  # a 429 out of the blue with next to nothing sent: the pause is all it asks for
            current = self.rate if self.rate is not None else getting_through
            target = refill[0] * _HEADROOM if refill is not None else min(current, getting_through) * _DECREASE
            self.rate = max(_MIN_RATE, target)
            self._last_raise = now

    def seen(self) -> None:
        """Some HTTP answer came back (even an error): the endpoint exists."""
        self.reached = True


_controllers: dict[str, RateController] = {}
_registry_lock = threading.Lock()


def controller_for(endpoint: str, *, rpm: int = 0, tpm: int = 0) -> RateController:
    """The process's one controller for ``endpoint`` (a base URL), with the given ceilings applied."""
    with _registry_lock:
        controller = _controllers.get(endpoint)
        if controller is None:
            controller = _controllers[endpoint] = RateController(rpm=rpm, tpm=tpm)
        elif rpm or tpm:
            controller.set_ceilings(rpm=rpm, tpm=tpm)
        return controller


def forget_all() -> None:
    """Drop every controller (tests: each starts with endpoints the process has not met)."""
    with _registry_lock:
        _controllers.clear()
