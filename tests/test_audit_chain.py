"""The audit log is a hash chain per organisation: `agentwatch audit verify` passes on a normal
log and names the first broken row after an edit or a deletion, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from agentwatch.db.engine import create_engine
from agentwatch.settings import normalise_database_url
from tests.admin_support import bearer
from tests.conftest import BACKENDS
from tests.support import Gateway, gateway_on

CONFIG = "providers: []\nmodels: []\n"


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    with gateway_on(
        request.param, tmp_path_factory.mktemp(f"audit-{request.param}"), CONFIG
    ) as gateway:
        yield gateway


def sql(gateway: Gateway, statement: str, **params: Any) -> list[Any]:
    async def run() -> list[Any]:
        engine = create_engine(normalise_database_url(gateway.database_url))
        try:
            async with engine.begin() as connection:
                result = await connection.execute(text(statement), params)
                return list(result.all()) if result.returns_rows else []
        finally:
            await engine.dispose()

    return asyncio.run(run())


def verify(gateway: Gateway) -> tuple[int, str]:
    done = gateway.cli("audit", "verify")
    return done.returncode, done.stdout + done.stderr


def create_team(gateway: Gateway, name: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/api/teams", json={"name": name}, headers=bearer(gateway.admin_token())
    )


def test_a_normal_log_verifies(gateway: Gateway) -> None:
    for index in range(3):
        assert create_team(gateway, f"team-{index}").status_code == 201
    team_id = create_team(gateway, "renamed-later").json()["id"]
    patched = httpx.patch(
        f"{gateway.url}/api/teams/{team_id}",
        json={"name": "renamed", "max_budget_usd": 12.5},
        headers=bearer(gateway.admin_token()),
    )
    assert patched.status_code == 200
    bad = httpx.post(
        f"{gateway.url}/api/auth/login", json={"email": "ghost@example.com", "password": "x"}
    )
    assert bad.status_code == 401
    status, output = verify(gateway)
    assert status == 0, output
    assert "verified" in output
    rows = sql(gateway, "SELECT org_id, seq, action FROM audit_logs ORDER BY org_id, seq")
    assert ("team.updated" in {r[2] for r in rows}) and any(r[0] == 0 for r in rows)


def test_concurrent_writers_keep_one_unbroken_chain(gateway: Gateway) -> None:
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: create_team(gateway, f"parallel-{i}"), range(24)))
    assert [a.status_code for a in answers] == [201] * 24
    seqs = [r[0] for r in sql(gateway, "SELECT seq FROM audit_logs WHERE org_id = 1 ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1))
    status, output = verify(gateway)
    assert status == 0, output


def _middle_row(gateway: Gateway) -> tuple[int, int, str]:
    rows = sql(gateway, "SELECT id, seq, action FROM audit_logs WHERE org_id = 1 ORDER BY seq")
    row_id, seq, action = rows[len(rows) // 2]
    return int(row_id), int(seq), str(action)


def test_an_edited_row_is_reported(gateway: Gateway) -> None:
    row_id, _seq, action = _middle_row(gateway)
    sql(gateway, "UPDATE audit_logs SET action = 'team.nothing_to_see' WHERE id = :id", id=row_id)
    status, output = verify(gateway)
    assert status == 1, output
    assert f"row {row_id}" in output and "edited" in output
    sql(gateway, "UPDATE audit_logs SET action = :action WHERE id = :id", id=row_id, action=action)
    assert verify(gateway)[0] == 0


def test_a_deleted_row_is_reported(gateway: Gateway) -> None:
    row_id, seq, _action = _middle_row(gateway)
    saved = sql(gateway, "SELECT * FROM audit_logs WHERE id = :id", id=row_id)[0]
    sql(gateway, "DELETE FROM audit_logs WHERE id = :id", id=row_id)
    status, output = verify(gateway)
    assert status == 1, output
    assert f"rows {seq}..{seq} are missing" in output
    _reinsert(gateway, saved)
    assert verify(gateway)[0] == 0


def test_deleting_the_newest_rows_is_reported(gateway: Gateway) -> None:
    newest = sql(gateway, "SELECT * FROM audit_logs WHERE org_id = 1 ORDER BY seq DESC LIMIT 1")[0]
    sql(gateway, "DELETE FROM audit_logs WHERE id = :id", id=newest.id)
    status, output = verify(gateway)
    assert status == 1, output
    assert "organisation 1" in output and "missing" in output
    _reinsert(gateway, newest)
    assert verify(gateway)[0] == 0


def _reinsert(gateway: Gateway, row: Any) -> None:
    values = dict(row._mapping)
    if not isinstance(values["details"], str):
        values["details"] = json.dumps(values["details"])
    columns = ", ".join(values)
    placeholders = ", ".join(f":{name}" for name in values)
    cast = "CAST(:details AS JSON)" if "postgres" in gateway.database_url else ":details"
    placeholders = placeholders.replace(":details", cast)
    sql(gateway, f"INSERT INTO audit_logs ({columns}) VALUES ({placeholders})", **values)
