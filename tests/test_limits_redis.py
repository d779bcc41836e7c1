"""What only the Redis store does: replicas sharing one limit, Redis's own clock, script
reloading after a flush, and keys that stay under the prefix and expire."""

from __future__ import annotations

import asyncio
import secrets

from redis.asyncio import Redis

from agentwatch.limits import Admission, ParallelCharge, RedisStore, Refusal
from tests.test_limits_stores import (
    DAY,
    REDIS_URL,
    admitted,
    admitter,
    budget,
    harness_for,
    refused,
    rpm,
    tpm,
)


async def test_two_replicas_share_one_budget_rate_and_concurrency_limit() -> None:
    async with harness_for("redis") as setup:
        first, second = setup.store(), setup.store()
        setup.ledger.delay = 0.1
        estimate = 1_000
        money = budget(setup.clock, "budget:team:1", 50 * estimate + 10, estimate)
        decisions = await asyncio.gather(
            *((first if i % 2 else second).admit(f"r{i}", (), (), (money,)) for i in range(200))
        )
        assert sum(isinstance(d, Admission) for d in decisions) == 50
        # Each replica may sum the ledger once; the first to store it wins (SET NX).
        assert 1 <= len(setup.ledger.loads) <= 2
        replies = [
            await admitter(store)(rates=(rpm("rpm:tenant:1", 10),))
            for _ in range(10)
            for store in (first, second)
        ]
        assert sum(isinstance(d, Admission) for d in replies) == 10
        slot = ParallelCharge("parallel:tenant:1", 3)
        held = [await admitter(store)(parallel=(slot,)) for store in (first, second, first)]
        refused(await admitter(second)(parallel=(slot,)))
        await first.settle(admitted(held[1]), tokens=None, cost_nanousd=None)  # B's, on A
        admitted(await admitter(second)(parallel=(slot,)))


async def test_a_counter_loaded_by_one_replica_is_not_loaded_again_by_another() -> None:
    async with harness_for("redis") as setup:
        first, second = setup.store(), setup.store()
        setup.ledger.totals["budget:org:2"] = 700
        money = budget(setup.clock, "budget:org:2", 1_000, 300)
        admitted(await admitter(first)(budgets=(money,)))
        refusal = refused(await admitter(second)(budgets=(money,)))
        assert refusal.used == 1_000
        assert setup.ledger.loads == ["budget:org:2"]


async def test_replicas_use_the_redis_clock() -> None:
    async with harness_for("redis") as setup:
        replicas = [
            RedisStore.from_url(REDIS_URL, setup.prefix, setup.ledger) for _ in range(2)
        ]  # no injected clock: the scripts read TIME
        setup.stores.extend(replicas)
        first = admitted(await admitter(replicas[0])(rates=(rpm("rpm:key:3", 1),)))
        assert first.requests is not None and 60 < first.requests.reset_seconds <= 60.01
        refusal = refused(await admitter(replicas[1])(rates=(rpm("rpm:key:3", 1),)))
        assert 59 < refusal.retry_after <= 60.01
        redis = Redis.from_url(REDIS_URL)
        try:
            seconds, micros = await redis.time()
        finally:
            await redis.aclose()
        assert abs(first.tick / 100 - (seconds + micros / 1e6)) < 5


async def test_scripts_are_reloaded_after_a_script_flush() -> None:
    async with harness_for("redis") as setup:
        store = setup.store()
        admission = admitted(await admitter(store)(rates=(tpm("tpm:key:4", 100, 60),)))
        redis = Redis.from_url(REDIS_URL)
        try:
            await redis.script_flush()
        finally:
            await redis.aclose()
        await store.settle(admission, tokens=10, cost_nanousd=None)
        assert admitted(await admitter(store)(rates=(tpm("tpm:key:4", 100, 90),))).tokens


async def test_keys_live_under_the_prefix_and_expire() -> None:
    async with harness_for("redis") as setup:
        store = setup.store()
        who = f"tenant:{secrets.token_hex(4)}"  # found by a scan of the whole server
        await admitter(store)(
            rates=(rpm(f"rpm:{who}", 10),),
            parallel=(ParallelCharge(f"parallel:{who}", 2),),
            budgets=(budget(setup.clock, f"budget:{who}", 10_000, 10),),
        )
        redis = Redis.from_url(REDIS_URL)
        try:
            names = [name.decode() async for name in redis.scan_iter(match=f"*{who}*")]
            ttls = {name: await redis.ttl(name) for name in names}
        finally:
            await redis.aclose()
        under = f"{setup.prefix}limits:"
        assert sorted(names) == [
            f"{under}{suffix}"
            for suffix in (
                f"budget:budget:{who}",
                f"budget:budget:{who}:deadlines",
                f"budget:budget:{who}:holds",
                f"parallel:parallel:{who}",
                f"rate:rpm:{who}",
                f"rate:rpm:{who}:ticks",
            )
        ]
        assert 0 < ttls[f"{under}rate:rpm:{who}"] <= 62
        assert 600 < ttls[f"{under}parallel:parallel:{who}"] <= 660
        assert 31 * DAY - 5 < ttls[f"{under}budget:budget:{who}"] <= 31 * DAY


async def test_a_refusal_names_every_window_for_the_headers() -> None:
    async with harness_for("redis") as setup:
        store = setup.store()
        charges = (rpm("rpm:tenant:6", 1), tpm("tpm:tenant:6", 1_000, 100))
        admitted(await admitter(store)(rates=charges))
        refusal = refused(await admitter(store)(rates=charges))
        assert isinstance(refusal, Refusal)
        assert refusal.requests is not None and refusal.requests.remaining == 0
        assert refusal.tokens is not None and refusal.tokens.remaining == 900
