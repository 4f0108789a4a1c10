"""The per-endpoint rate controller (dsetlog.llm.ratelimit): pacing, pauses, AIMD and the servers' headers."""

from __future__ import annotations

import asyncio
import time

import pytest

from dsetlog.llm.ratelimit import RateController, controller_for, parse_duration, retry_after


def _send_times(controller: RateController, n: int) -> list[float]:
    async def go() -> list[float]:
        times: list[float] = []

        async def one() -> None:
            await controller.acquire(10)
            times.append(time.monotonic())

        await asyncio.gather(*(one() for _ in range(n)))
        return sorted(times)

    return asyncio.run(go())


def test_rpm_spaces_requests_evenly_instead_of_bursting_a_minute_at_once() -> None:
    times = _send_times(RateController(rpm=1200), 9)  # 20/s: one every 50 ms
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 0.025 and 0.35 <= times[-1] - times[0] <= 0.6  # timers wake a little late or early


def test_no_limit_known_means_no_pacing() -> None:
    times = _send_times(RateController(), 50)
    assert times[-1] - times[0] < 0.05


def test_a_429_pauses_every_caller_for_the_time_the_server_names() -> None:
    controller = RateController()
    controller.rate_limited({"retry-after-ms": "300"}, 0.3)
    started = time.monotonic()
    times = _send_times(controller, 5)
    assert times[0] - started >= 0.28  # nobody went before the pause ended
    assert controller.limited == 1


def test_aimd_cuts_below_what_got_through_then_climbs_back() -> None:
    controller = RateController()
    _send_times(controller, 41)  # 41 sent within the last second, one of them refused:
    controller.rate_limited(None, None)
    assert controller.rate == pytest.approx(40 * 0.85)  # below the 40 a second that got through
    controller.rate_limited(None, None)  # the 429s of calls already in flight: no second cut
    assert controller.rate == pytest.approx(40 * 0.85)
    time.sleep(0.2)
    controller.succeeded(None)
    assert controller.rate is not None and controller.rate > 40 * 0.85


def test_the_servers_headers_set_the_rate_it_refills_at() -> None:
    controller = RateController()
    controller.succeeded({"x-ratelimit-limit-requests": "40", "x-ratelimit-remaining-requests": "0",
                          "x-ratelimit-reset-requests": "1s"})
    assert controller.rate == pytest.approx(40 * 0.97)
    # OpenAI's per-minute limits in the same headers: 10,000 RPM, one used, full again in 6 ms
    controller.succeeded({"x-ratelimit-limit-requests": "10000", "x-ratelimit-remaining-requests": "9999",
                          "x-ratelimit-reset-requests": "6ms"})
    assert controller.rate is None  # plenty left: no pacing of our own


def test_durations_and_retry_after() -> None:
    assert parse_duration("1s") == 1.0 and parse_duration("250ms") == 0.25
    assert parse_duration("6m0s") == 360.0 and parse_duration("1m30.5s") == 90.5 and parse_duration("2") == 2.0
    assert parse_duration("soon") is None and parse_duration("") is None
    assert retry_after({"retry-after-ms": "25", "retry-after": "1"}) == 0.025  # the precise one wins
    assert retry_after({"retry-after": "2"}) == 2.0
    assert retry_after({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "500ms"}) == 0.5
    assert retry_after({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "3s"}) == 3.0
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert retry_after(None) is None


def test_one_controller_per_endpoint_for_the_whole_process() -> None:
    a = controller_for("http://127.0.0.1:9/v1")
    assert controller_for("http://127.0.0.1:9/v1", rpm=60) is a and a.rpm == 60
    assert controller_for("http://127.0.0.1:10/v1") is not a
