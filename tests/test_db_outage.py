"""The database stopped under load: the gateway keeps answering, and once the database is back
the ledger holds exactly one row per request, whether the rows waited in memory, in the spill
file, or in a spill file a stopped gateway left for the next one."""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import asyncpg
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sqlalchemy.ext.asyncio import AsyncEngine

from agentwatch.crypto import hash_tenant_key
from agentwatch.db.engine import create_engine, session_factory
from agentwatch.db.migrate import upgrade_database
from agentwatch.db.models import ApiKey, Organization, Tenant, utcnow
from agentwatch.settings import normalise_database_url
from agentwatch.tenant_auth import (
    POSITIVE_TTL_SECONDS,
    STALE_IF_ERROR_SECONDS,
    KeyStoreUnavailable,
    TenantAuthenticator,
)
from tests.conftest import BACKENDS, standard_config
from tests.fake_openai import FakeOpenAI
from tests.support import Gateway, database, free_port, new_key
from tests.test_usage_recorder import Outage

THREADS = 4
WARM_UP = 40  # answered requests before the outage: keys and routes are cached
DURING = 1500  # requests answered while the database is away (the outage lasts that long)
AFTER = 60
MAX_PENDING = 20  # tiny, so the outage spills to disk
DEADLINE = 180.0  # generous bound on every wait; nothing asserts on durations


# --- a private PostgreSQL cluster, so stopping it disturbs nobody ---------------------------


def _pg_bin(tool: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    assert found, f"no PostgreSQL {tool} under /usr/lib/postgresql/*/bin"
    return found[-1]


@dataclass
class PrivateCluster:
    """initdb into a temporary directory, served on 127.0.0.1 and a free port, trust auth."""

    root: Path
    port: int = field(default_factory=free_port)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def _run(self, tool: str, *args: str) -> None:
        # PostgreSQL refuses to run as root; the tests may well be root.
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run(
            [*as_postgres, _pg_bin(tool), *args], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"{tool} {args} failed:\n{done.stdout}\n{done.stderr}"

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root}"
        log = str(self.root / "postgres.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-w", "-o", options, "start")

    def stop(self, mode: str = "immediate") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    async def admin(self, statement: str) -> None:
        connection = await asyncpg.connect(self.url("postgres"))
        try:
            await connection.execute(statement)
        finally:
            await connection.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    # Not under pytest's tmp_path: its parents are closed to the postgres user.
    root = Path(tempfile.mkdtemp(prefix="agentwatch-pg-", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    server = PrivateCluster(root)
    try:
        server.init()
        server.start()
        yield server
        server.stop("fast")
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- traffic: the openai SDK from several threads, one own request id per call --------------


@dataclass(frozen=True, slots=True)
class Sent:
    request_id: str
    status: int  # -1: no HTTP answer at all
    phase: str  # what the database was doing when the request started


@dataclass
class Traffic:
    base_url: str
    key: str
    phase: str = "before"
    sent: list[Sent] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for n in range(THREADS):
            thread = threading.Thread(target=self._loop, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in self._threads)

    def count(self, phase: str) -> int:
        with self._lock:
            return sum(1 for item in self.sent if item.phase == phase)

    def _loop(self, n: int) -> None:
        client = openai.OpenAI(
            base_url=f"{self.base_url}/v1", api_key=self.key, max_retries=0, timeout=60
        )
        i = 0
        while not self._stop.is_set():
            request_id = f"outage-{n}-{i:05d}"
            phase = self.phase
            status = call(client, request_id, stream=i % 3 == 0)
            with self._lock:
                self.sent.append(Sent(request_id, status, phase))
            i += 1
        client.close()


def call(client: openai.OpenAI, request_id: str, *, stream: bool) -> int:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": f"hello {request_id}"}
    ]
    headers = {"x-request-id": request_id}
    try:
        if stream:
            chunks = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
                extra_headers=headers,
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            return 200 if text else -2
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, extra_headers=headers
        )
        return 200 if reply.choices[0].message.content else -2
    except openai.APIStatusError as error:
        return error.status_code
    except openai.APIConnectionError:
        return -1


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def ledger_counts(read: Callable[[], list[tuple[str, int]]]) -> Counter[str]:
    return Counter({request_id: count for request_id, count in read()})


def assert_one_row_per_request(
    traffic: Traffic, read: Callable[[], list[tuple[str, int]]], gateway: Gateway
) -> None:
    failed = [item for item in traffic.sent if item.status != 200]
    assert not failed, f"{len(failed)} requests failed, e.g. {failed[:5]}"
    sent = {item.request_id for item in traffic.sent}
    assert len(sent) == len(traffic.sent)
    spill = gateway.workdir / "data" / "usage-spill.jsonl"
    wait_until(lambda: set(ledger_counts(read)) >= sent, "every request's ledger row")
    wait_until(lambda: not spill.exists(), "the spill file to be written back")
    counts = ledger_counts(read)
    assert set(counts) == sent
    twice = {request_id: n for request_id, n in counts.items() if n != 1}
    assert not twice, f"written more than once: {twice}"


def pg_ledger(url: str) -> Callable[[], list[tuple[str, int]]]:
    async def read() -> list[tuple[str, int]]:
        connection = await asyncpg.connect(url)
        try:
            rows = await connection.fetch(
                "SELECT request_id, count(*) FROM usage_records GROUP BY request_id"
            )
        finally:
            await connection.close()
        return [(row[0], row[1]) for row in rows]

    return lambda: asyncio.run(read())


def sqlite_ledger(path: Path) -> Callable[[], list[tuple[str, int]]]:
    def read() -> list[tuple[str, int]]:
        with sqlite3.connect(path, timeout=60) as connection:
            query = "SELECT request_id, count(*) FROM usage_records GROUP BY request_id"
            return [(str(row[0]), int(row[1])) for row in connection.execute(query)]

    return read


def gateway_for(workdir: Path, url: str, upstream: FakeOpenAI, key: str) -> Gateway:
    return Gateway(
        workdir=workdir,
        database_url=url,
        config=standard_config(upstream.base_url, key, new_key()),
        env={
            "UPSTREAM_KEY": "k",
            "CI_TENANT_KEY": key,
            "AGENTWATCH_USAGE_MAX_PENDING": str(MAX_PENDING),
        },
        tenant_key=key,
    )


def outage_under_way(traffic: Traffic, gateway: Gateway) -> Callable[[], bool]:
    """Enough requests answered without the database, and rows already spilled to disk."""
    spill = gateway.workdir / "data" / "usage-spill.jsonl"
    return lambda: traffic.count("outage") >= DURING and spill.exists()


# --- the end-to-end runs ------------------------------------------------------------------


def test_postgres_stopped_under_load(
    cluster: PrivateCluster, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    name = "outage_" + new_key()[-12:]
    asyncio.run(cluster.admin(f'CREATE DATABASE "{name}"'))
    key = new_key()
    gateway = gateway_for(tmp_path, cluster.url(name), fake_openai, key)
    gateway.start()
    traffic = Traffic(gateway.url, key)
    try:
        traffic.start()
        wait_until(lambda: traffic.count("before") >= WARM_UP, "warm-up traffic")
        cluster.stop("immediate")
        traffic.phase = "outage"
        try:
            wait_until(outage_under_way(traffic, gateway), "traffic during the outage")
            # A key the gateway never saw cannot be checked: 503 in OpenAI's shape, not 500.
            stranger = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=new_key(), max_retries=0)
            with pytest.raises(openai.APIStatusError) as refused:
                stranger.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
                )
            stranger.close()
            assert refused.value.status_code == 503
            assert refused.value.response.json()["error"]["code"] == "service_unavailable"
        finally:
            traffic.phase = "restarting"
            cluster.start()
        traffic.phase = "after"
        wait_until(lambda: traffic.count("after") >= AFTER, "traffic after the outage")
    finally:
        traffic.stop()
    assert_one_row_per_request(traffic, pg_ledger(cluster.url(name)), gateway)
    assert gateway.stop() in (0, -signal.SIGTERM)


def test_postgres_stopped_and_gateway_restarted_during_the_outage(
    cluster: PrivateCluster, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    name = "outage_" + new_key()[-12:]
    asyncio.run(cluster.admin(f'CREATE DATABASE "{name}"'))
    key = new_key()
    gateway = gateway_for(tmp_path, cluster.url(name), fake_openai, key)
    spill = tmp_path / "data" / "usage-spill.jsonl"
    gateway.start()
    traffic = Traffic(gateway.url, key)
    try:
        traffic.start()
        wait_until(lambda: traffic.count("before") >= WARM_UP, "warm-up traffic")
        cluster.stop("immediate")
        traffic.phase = "outage"
        wait_until(outage_under_way(traffic, gateway), "traffic during the outage")
    finally:
        traffic.stop()
    try:
        # SIGTERM with the database still away: what memory held joins the spill file.
        assert gateway.stop(timeout=120) in (0, -signal.SIGTERM), gateway.log_path.read_text()
        assert spill.exists()
        # Every request answered during the outage is in it (earlier ones may be too).
        assert len(spill.read_bytes().splitlines()) >= traffic.count("outage")
    finally:
        cluster.start()
    gateway.start()  # replays the spill file before it serves
    assert_one_row_per_request(traffic, pg_ledger(cluster.url(name)), gateway)
    assert gateway.stop() in (0, -signal.SIGTERM)


LOCK_HOLDER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
connection.execute("ROLLBACK")
"""


def test_sqlite_locked_by_another_process_under_load(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    path = tmp_path / "gateway.db"
    key = new_key()
    gateway = gateway_for(tmp_path, f"sqlite:///{path}", fake_openai, key)
    gateway.start()
    traffic = Traffic(gateway.url, key)
    try:
        traffic.start()
        wait_until(lambda: traffic.count("before") >= WARM_UP, "warm-up traffic")
        holder = subprocess.Popen(
            [sys.executable, "-c", LOCK_HOLDER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert holder.stdin is not None and holder.stdout is not None
        try:
            assert holder.stdout.readline() == b"locked\n"
            traffic.phase = "outage"
            wait_until(outage_under_way(traffic, gateway), "traffic while the file is locked")
        finally:
            traffic.phase = "restarting"
            holder.stdin.write(b"release\n")
            holder.stdin.close()
            assert holder.wait(60) == 0
        traffic.phase = "after"
        wait_until(lambda: traffic.count("after") >= AFTER, "traffic after the lock")
    finally:
        traffic.stop()
    assert_one_row_per_request(traffic, sqlite_ledger(path), gateway)
    assert gateway.stop() in (0, -signal.SIGTERM)


# --- the key cache serves what it knew while the database is away -------------------------


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(str(request.param), tmp_path) as url:
        yield normalise_database_url(url)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    try:
        await upgrade_database(engine)
        yield engine
    finally:
        await engine.dispose()


async def add_key(engine: AsyncEngine, tenant: str, *, expires_in: float | None = None) -> str:
    key = new_key()
    async with session_factory(engine).begin() as session:
        org = Organization(name=f"org-{tenant}")
        session.add(org)
        await session.flush()
        row = Tenant(org_id=org.id, name=tenant)
        session.add(row)
        await session.flush()
        expires = utcnow() + timedelta(seconds=expires_in) if expires_in else None
        session.add(
            ApiKey(
                tenant_id=row.id, key_hash=hash_tenant_key(key), prefix=key[:12], expires_at=expires
            )
        )
    return key


async def test_known_keys_keep_their_answer_while_the_database_is_away(
    engine: AsyncEngine,
) -> None:
    backend = "postgres" if engine.dialect.name == "postgresql" else "sqlite"
    now = [1000.0]
    auth = TenantAuthenticator(session_factory(engine), clock=lambda: now[0])
    steady, dropped = await add_key(engine, "steady"), await add_key(engine, "dropped")
    expiring = await add_key(engine, "expiring", expires_in=60)
    refused = new_key()
    for key in (steady, dropped, expiring):
        assert await auth.authenticate(key) is not None
    assert await auth.authenticate(refused) is None
    principal = await auth.authenticate(steady)

    outage = Outage(backend, engine)
    await outage.begin()
    try:
        now[0] += POSITIVE_TTL_SECONDS + 1  # every entry is due for a lookup, which fails
        assert await auth.authenticate(steady) == principal
        assert await auth.authenticate(refused) is None  # a refusal stays a refusal
        assert await auth.authenticate(expiring) is not None
        with pytest.raises(KeyStoreUnavailable) as unknown:
            await auth.authenticate(new_key())
        assert unknown.value.status == 503
        auth.forget(hash_tenant_key(dropped))  # an admin change: nothing to fall back on
        with pytest.raises(KeyStoreUnavailable):
            await auth.authenticate(dropped)

        now[0] += 30  # past the expiring key's expiry: never served after it
        with pytest.raises(KeyStoreUnavailable):
            await auth.authenticate(expiring)
        assert await auth.authenticate(steady) == principal

        now[0] += STALE_IF_ERROR_SECONDS  # an hour without the database: no more guessing
        with pytest.raises(KeyStoreUnavailable):
            await auth.authenticate(steady)
    finally:
        await outage.end()
    assert await auth.authenticate(steady) == principal
    assert await auth.authenticate(dropped) is not None
