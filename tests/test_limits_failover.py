"""Redis unreachable: policy "open" decides in-process, "closed" refuses; either way logged once
per outage and counted. The outage is real: a closed local port, or a TCP relay to the test
Redis that is stopped and started again."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from agentwatch.limits import FailoverStore, FailurePolicy, MemoryStore, RedisStore
from agentwatch.settings import SettingsError, load_settings
from tests.support import free_port
from tests.test_limits_stores import (
    REDIS_URL,
    FakeClock,
    Ledger,
    admitted,
    admitter,
    budget,
    refused,
    rpm,
)

ERRORS = "agentwatch_limits_store_errors_total"


class Relay:
    """127.0.0.1:port → the test Redis, until stopped (which also cuts open connections)."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", 6379)
        self._writers.update((writer, upstream_writer))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except ConnectionError:
                pass  # the other side was cut: the outage this relay simulates
            finally:
                sink.close()
                self._writers.discard(sink)

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


@asynccontextmanager
async def failover(
    port: int, policy: FailurePolicy
) -> AsyncIterator[tuple[FailoverStore, CollectorRegistry, FakeClock]]:
    clock, ledger, registry = FakeClock(), Ledger(), CollectorRegistry()
    prefix = f"agentwatch-test-{secrets.token_hex(4)}:"
    primary = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", prefix, ledger, clock=clock)
    store = FailoverStore(
        primary, MemoryStore(ledger, clock=clock), policy, registry=registry, clock=clock
    )
    try:
        yield store, registry, clock
    finally:
        await store.close()
        redis = Redis.from_url(REDIS_URL)
        try:
            names = [name async for name in redis.scan_iter(match=f"{prefix}*")]
            if names:
                await redis.delete(*names)
        finally:
            await redis.aclose()


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "agentwatch.limits.failover" and r.levelno == logging.WARNING
    ]


async def test_open_decides_in_process_and_logs_the_outage_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agentwatch.limits.failover")
    async with failover(free_port(), "open") as (store, registry, clock):
        admit = admitter(store)
        money = budget(clock, "budget:t:1", 1_000, 400)
        first = admitted(await admit(rates=(rpm("rpm:t:1", 2),), budgets=(money,)))
        assert first.backend == "memory"
        assert store.failing and store.errors == 1
        clock.advance(0.5)  # within the probe interval Redis is not even tried
        admitted(await admit(rates=(rpm("rpm:t:1", 2),), budgets=(money,)))
        assert store.errors == 1
        clock.advance(1)
        refusal = refused(await admit(rates=(rpm("rpm:t:1", 2),)))
        assert (refusal.kind, store.errors) == ("rate", 2)  # local limits still hold
        await store.settle(first, tokens=None, cost_nanousd=150)
        assert await store.spent("budget:t:1") == 150  # the in-process counter
        assert registry.get_sample_value(ERRORS, {"operation": "admit"}) == 2
        assert len(warnings(caplog)) == 1
        assert "using in-process limits" in warnings(caplog)[0]


async def test_closed_refuses_as_unavailable() -> None:
    async with failover(free_port(), "closed") as (store, registry, _clock):
        refusal = refused(await admitter(store)(rates=(rpm("rpm:t:2", 100),)))
        assert (refusal.kind, refusal.key, refusal.retry_after) == ("unavailable", "", 1.0)
        assert await store.spent("budget:t:2") is None
        assert registry.get_sample_value(ERRORS, {"operation": "admit"}) == 1


async def test_back_to_redis_when_it_returns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agentwatch.limits.failover")
    relay = Relay()
    await relay.start()
    async with failover(relay.port, "open") as (store, registry, clock):
        admit = admitter(store)
        money = budget(clock, "budget:t:3", 10_000, 100)
        before = admitted(await admit(budgets=(money,)))
        assert before.backend == "redis"
        await relay.stop()
        during = admitted(await admit(budgets=(money,)))
        assert during.backend == "memory"
        # A settle that cannot reach Redis is counted, not raised: the hold expires.
        await store.settle(before, tokens=None, cost_nanousd=100)
        assert registry.get_sample_value(ERRORS, {"operation": "settle"}) is None  # skipped
        clock.advance(1.5)
        await store.settle(before, tokens=None, cost_nanousd=100)
        assert registry.get_sample_value(ERRORS, {"operation": "settle"}) == 1
        await relay.start()
        clock.advance(1.5)
        after = admitted(await admit(budgets=(money,)))
        assert after.backend == "redis" and not store.failing
        await store.settle(during, tokens=None, cost_nanousd=100)  # in-process, as admitted
        assert await store.spent("budget:t:3") == 0  # Redis's counter: the outage's not in it
        assert len(warnings(caplog)) == 1
        assert any("reachable again" in r.getMessage() for r in caplog.records)
    await relay.stop()


def test_the_policy_comes_from_the_environment(tmp_path: Path) -> None:
    base = {
        "AGENTWATCH_DATA_DIR": str(tmp_path),
        "JWT_SECRET": "jwt-secret-for-tests",
        "ENCRYPTION_KEY": bytes(range(32)).hex(),
    }
    assert load_settings(base).limits_redis_failure == "open"
    closed = {**base, "AGENTWATCH_LIMITS_REDIS_FAILURE": "Closed"}
    assert load_settings(closed).limits_redis_failure == "closed"
    with pytest.raises(SettingsError, match="AGENTWATCH_LIMITS_REDIS_FAILURE"):
        load_settings({**base, "AGENTWATCH_LIMITS_REDIS_FAILURE": "sometimes"})
