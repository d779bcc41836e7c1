"""Test support: a real gateway process on 127.0.0.1, per-run databases, and admin API helpers."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "correct horse battery"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def database(backend: str, workdir: Path) -> Iterator[str]:
    """A fresh database for one gateway: a SQLite file, or a PostgreSQL database dropped after."""
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'gateway.db'}"
        return
    name = f"agentwatch_test_{secrets.token_hex(6)}"
    asyncio.run(pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def pg_admin(statement: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@dataclass
class Gateway:
    """`agentwatch serve` as a subprocess; `stop()` sends SIGTERM like a process manager."""

    workdir: Path
    database_url: str
    config: str
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    tenant_key: str = ""
    restricted_key: str = ""
    _token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "gateway.log"

    def start(self, timeout: float = 60) -> None:
        config_path = self.workdir / "config.yaml"
        config_path.write_text(self.config)
        env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/tmp"),
            "AGENTWATCH_DATA_DIR": str(self.workdir / "data"),
            "DATABASE_URL": self.database_url,
            "AGENTWATCH_CONFIG": str(config_path),
            "PORT": str(self.port),
            "AGENTWATCH_ADMIN_EMAIL": ADMIN_EMAIL,
            "AGENTWATCH_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "LOG_LEVEL": "INFO",
            **self.env,
        }
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agentwatch", "serve"],
            cwd=self.workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited early:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gateway did not become ready:\n{self.log_path.read_text()}")

    def stop(self, timeout: float = 30) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/tmp"),
            "AGENTWATCH_DATA_DIR": str(self.workdir / "data"),
            "DATABASE_URL": self.database_url,
            **self.env,
        }
        return subprocess.run(
            [sys.executable, "-m", "agentwatch", *args],
            cwd=self.workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def admin_token(self) -> str:
        if self._token is None:
            response = httpx.post(
                f"{self.url}/api/auth/login",
                json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
            )
            response.raise_for_status()
            self._token = str(response.json()["access_token"])
        return self._token

    def usage(self, **params: Any) -> dict[str, Any]:
        response = httpx.get(
            f"{self.url}/api/usage/records",
            params=params,
            headers={"authorization": f"Bearer {self.admin_token()}"},
        )
        response.raise_for_status()
        page: dict[str, Any] = response.json()
        return page

    def wait_for_usage(
        self, count: int, timeout: float = 10, **params: Any
    ) -> list[dict[str, Any]]:
        """Usage is written off the request path, so poll until `count` rows are visible."""
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = self.usage(limit=1000, **params)["data"]
            if len(rows) >= count:
                return rows
            time.sleep(0.05)
        raise AssertionError(f"expected {count} usage rows, saw {len(rows)}")


@contextmanager
def running_gateway(
    workdir: Path, config: str, tenant_key: str = "", env: dict[str, str] | None = None
) -> Iterator[Gateway]:
    """A gateway on a fresh SQLite file in `workdir`, stopped (SIGTERM) afterwards."""
    gateway = Gateway(
        workdir=workdir,
        database_url=f"sqlite:///{workdir / 'gw.db'}",
        config=config,
        env=env or {},
        tenant_key=tenant_key,
    )
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()


@contextmanager
def gateway_on(
    backend: str, workdir: Path, config: str, env: dict[str, str] | None = None
) -> Iterator[Gateway]:
    """A gateway on a fresh database of `backend` (see `database`), stopped afterwards."""
    with database(backend, workdir) as url:
        gateway = Gateway(workdir=workdir, database_url=url, config=config, env=env or {})
        gateway.start()
        try:
            yield gateway
        finally:
            gateway.stop()


def new_key() -> str:
    return "sk-test-" + secrets.token_hex(16)
