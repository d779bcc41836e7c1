"""Liveness, readiness and the admin API's OpenAPI document."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.support import Gateway, database, new_key, pg_admin


def test_healthz_readyz_and_openapi(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == "ok"
    document = httpx.get(f"{gateway.url}/api/openapi.json").json()
    assert {"/api/auth/login", "/api/usage/records"} <= set(document["paths"])


def test_unknown_admin_path_is_a_json_404(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.url}/api/nothing-here")
    assert response.status_code == 404 and response.json()["detail"]


def test_readyz_fails_when_the_database_is_gone(tmp_path: Path) -> None:
    with database("postgres", tmp_path) as url:
        gateway = Gateway(
            workdir=tmp_path,
            database_url=url,
            config=f'tenants:\n  - name: t\n    api_keys: ["{new_key()}"]\n',
        )
        gateway.start()
        try:
            name = url.rsplit("/", 1)[1]
            asyncio.run(pg_admin(f'DROP DATABASE "{name}" WITH (FORCE)'))
            assert httpx.get(f"{gateway.url}/readyz").status_code == 503
            assert httpx.get(f"{gateway.url}/healthz").status_code == 200
        finally:
            gateway.stop()
