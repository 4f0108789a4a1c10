"""dsetlog.engine.build: clients and engines made from one settings value, and the engine's Cancel signal."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dsetlog.engine.build import EngineSettings, client_for, default_retry, engine_for
from dsetlog.engine.engine import WorkItem
from dsetlog.engine.progress import Budget, Cancel, Progress
from dsetlog.llm.client import RetryPolicy
from dsetlog.llm.providers import Provider, resolve
from dsetlog.llm.ratelimit import RateController, controller_for
from dsetlog.simulator.server import Simulator
from dsetlog.store.events import EntryGenerated, Usage
from dsetlog.store.log import EventLog


def provider_of(sim: Simulator) -> Provider:
    return resolve("vllm", base_url=sim.base_url, model="sim-chat", env={})


def make_events(item: WorkItem, c: Any, attempt: int) -> list[EntryGenerated]:
    return [EntryGenerated(dataset_id=item.dataset_id, item_id=item.item_id, entry_id="entry_" + item.item_id,
                           question="q", answer=c.content, model=c.model, provider="vllm",
                           usage=Usage(prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens))]


def items(n: int) -> list[WorkItem]:
    return [WorkItem("d", f"i{i}", [{"role": "user", "content": f"question {i}"}]) for i in range(n)]


def test_the_default_retry_schedule_is_defined_once() -> None:
    assert default_retry() == RetryPolicy(max_retries=3, backoff=2.0)
    assert EngineSettings().policy() == default_retry()
    mine = RetryPolicy(max_retries=1, backoff=0.5)
    assert EngineSettings(retry=mine).policy() is mine


def test_a_client_gets_the_settings_limiter_timeout_and_sampling(make_simulator: Callable[..., Simulator]) -> None:
    provider = provider_of(make_simulator())
    own = RateController(rpm=10)
    client = client_for(provider, EngineSettings(limiter_for=lambda p: own, temperature=0.3, max_tokens=50))
    assert client.limiter is own and (client.temperature, client.max_tokens) == (0.3, 50)
    # no limiter_for (or one that has none): the process's controller of the endpoint, with the ceilings
    shared = client_for(provider, EngineSettings(rpm=30, limiter_for=lambda p: None), temperature=0.9)
    assert shared.limiter is controller_for(provider.endpoint) and shared.temperature == 0.9
    asyncio.run(client.close())
    asyncio.run(shared.close())


def test_an_engine_takes_the_settings_and_the_providers_price(tmp_path: Path,
                                                              make_simulator: Callable[..., Simulator]) -> None:
    provider = provider_of(make_simulator())
    settings = EngineSettings(concurrency=3, retry=RetryPolicy(max_retries=1, backoff=0.01))
    with EventLog.in_dir(tmp_path) as log:
        engine = engine_for(provider, settings, log=log, make_events=make_events,
                            progress=Progress(total=0, enabled=False), run_id="run_x")
        assert (engine.concurrency, engine.policy, engine.run_id) == (3, settings.retry, "run_x")
        assert engine.price == provider.price() and isinstance(engine.budget, Budget) and engine.cancel is None
        priced = engine_for(provider, settings, log=log, make_events=make_events,
                            progress=Progress(total=0, enabled=False), price=(1.0, 2.0))
        assert priced.price == (1.0, 2.0)
        asyncio.run(engine.client.close())
        asyncio.run(priced.client.close())


def test_a_cancelled_engine_starts_no_new_call_and_ends_interrupted(tmp_path: Path,
                                                                    make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(latency_ms=20)
    cancel = Cancel()
    progress = Progress(total=0, enabled=False)
    with EventLog.in_dir(tmp_path) as log:
        engine = engine_for(provider_of(sim), EngineSettings(concurrency=2), log=log, make_events=make_events,
                            progress=progress, cancel=cancel)

        async def run() -> Any:
            async def stop_soon() -> None:
                while progress.done < 2:
                    await asyncio.sleep(0.005)
                cancel.set("enough")

            stopper = asyncio.create_task(stop_soon())
            try:
                return await engine.run(items(50))
            finally:
                stopper.cancel()
                await engine.client.close()

        result = asyncio.run(run())
    assert result.outcome == "interrupted" and cancel.reason == "enough"
    assert 2 <= result.answered < 50 and result.not_started == 50 - result.answered - result.failed
    assert len(sim.requests()) == result.answered  # the calls in flight finished; none started after
