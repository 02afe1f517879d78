"""The gateway batches concurrent requests that reach the same local tier, with the same answers."""

from __future__ import annotations

import asyncio

from distillery.routing.config import CascadeConfig, TierConfig
from distillery.serve.backend import CascadeBackend, StepOptions
from distillery.trajectory import Message
from distillery.world import SYSTEM_PROMPT
from distillery.world.tasks import generate_tasks
from distillery.world.tools import toolbox


def answers(backend: CascadeBackend, queries: list[str]) -> list[str]:
    specs = toolbox().specs

    async def one(query: str):
        messages = [Message(role="system", content=SYSTEM_PROMPT), Message(role="user", content=query)]
        routed = await backend.step(messages, specs, StepOptions(max_tokens=96))
        return routed.turn.text + "".join(call.canonical() for call in routed.turn.tool_calls)

    async def everyone():
        return await asyncio.gather(*(one(q) for q in queries))

    return asyncio.run(everyone())


def test_concurrent_requests_to_a_local_tier_are_one_batch_with_the_same_answers():
    config = CascadeConfig(tiers=[TierConfig("world:teacher")]).validate()
    queries = [task.query for task in generate_tasks("validation", 6, seed=5)]
    one_at_a_time = CascadeBackend.from_config(config, max_batch=1)
    batched = CascadeBackend.from_config(config, max_batch=8)
    expected = answers(one_at_a_time, queries)
    assert answers(batched, queries) == expected
    model = batched.cascade.tiers[0].model
    assert model.calls == len(queries) and model.batches < len(queries)  # several requests per generate_many
    assert not hasattr(one_at_a_time.cascade.tiers[0].model, "batches")  # max_batch=1 leaves the model alone
