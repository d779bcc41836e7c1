"""The `agentwatch` command line as a user runs it: a subprocess with a minimal environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import BACKENDS
from tests.support import Gateway, database, free_port

SECRETS = {"JWT_SECRET": "cli-test-jwt-secret", "ENCRYPTION_KEY": "cli test passphrase"}


def agentwatch(
    workdir: Path, *args: str, database_url: str | None = None, **environ: str
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "AGENTWATCH_DATA_DIR": str(workdir / "data"),
        **({"DATABASE_URL": database_url} if database_url else {}),
        **environ,
    }
    return subprocess.run(
        [sys.executable, "-m", "agentwatch", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["db"],
        ["db", "upgrade"],
        ["users", "create-admin"],
        ["keys", "create"],
        ["demo-upstream"],
    ],
    ids=lambda command: " ".join(command) or "agentwatch",
)
def test_help(tmp_path: Path, command: list[str]) -> None:
    done = agentwatch(tmp_path, *command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: agentwatch {' '.join(command)}".rstrip())
    assert done.stderr == ""
    assert not (tmp_path / "data").exists()  # help reads no settings and writes nothing


def test_no_command_prints_help_and_fails(tmp_path: Path) -> None:
    done = agentwatch(tmp_path)
    assert done.returncode == 2
    assert "serve" in done.stdout and "keys" in done.stdout


@pytest.mark.parametrize("backend", BACKENDS)
def test_db_upgrade_is_repeatable(tmp_path: Path, backend: str) -> None:
    with database(backend, tmp_path) as url:
        for _ in range(2):
            done = agentwatch(tmp_path, "db", "upgrade", database_url=url, **SECRETS)
            assert done.returncode == 0, done.stderr
            assert "database is at the latest revision" in done.stderr
            assert done.stdout == ""
        created = agentwatch(tmp_path, "keys", "create", "--tenant", "t", database_url=url)
        assert created.returncode == 0, created.stderr


def test_keys_create_prints_a_working_key(gateway: Gateway) -> None:
    done = gateway.cli("keys", "create", "--tenant", "made-by-cli", "--name", "laptop")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and done.stdout.endswith("\n")
    (key,) = lines
    assert len(key) >= 20 and key == key.strip()
    assert "created tenant made-by-cli" in done.stderr and key not in done.stderr

    response = httpx.get(f"{gateway.url}/v1/models", headers={"authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    names = {model["id"] for model in response.json()["data"]}
    assert {"gpt-4o-mini", "embedder"} <= names

    again = gateway.cli("keys", "create", "--tenant", "made-by-cli")
    assert again.returncode == 0 and again.stdout.strip() != key
    assert "created tenant" not in again.stderr


def test_unknown_keys_are_refused(gateway: Gateway) -> None:
    response = httpx.get(
        f"{gateway.url}/v1/models", headers={"authorization": "Bearer aw-not-a-real-key-000000"}
    )
    assert response.status_code == 401


def test_create_admin_then_log_in(gateway: Gateway) -> None:
    done = gateway.cli("users", "create-admin", "--email", "Ops@Example.com", "--password", "pw-1")
    assert done.returncode == 2
    assert done.stderr.startswith("agentwatch: ") and "12 characters" in done.stderr
    weak = gateway.cli(
        "users", "create-admin", "--email", "ops@example.com", "--password", "Password123!"
    )
    assert weak.returncode == 2 and "Password123!" not in weak.stderr

    done = gateway.cli(
        "users", "create-admin", "--email", "Ops@Example.com", "--password", "first long passphrase"
    )
    assert done.returncode == 0, done.stderr
    login = {"email": "ops@example.com", "password": "first long passphrase"}
    response = httpx.post(f"{gateway.url}/api/auth/login", json=login)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert isinstance(token, str) and token.count(".") == 2

    reset = gateway.cli(
        "users",
        "create-admin",
        "--email",
        "ops@example.com",
        "--password",
        "second long passphrase",
    )
    assert reset.returncode == 0, reset.stderr
    assert httpx.post(f"{gateway.url}/api/auth/login", json=login).status_code == 401
    login["password"] = "second long passphrase"
    assert httpx.post(f"{gateway.url}/api/auth/login", json=login).status_code == 200


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("providers:\n  - name: a\n   type: openai\n", "not valid YAML"),
        ("providers:\n  - {name: a, type: azure}\n", "providers.0.type"),
        ("providers:\n  - {name: a, type: openai, api_key: ${NO_SUCH_KEY}}\n", "NO_SUCH_KEY"),
        ("tenants:\n  - {name: t, api_keys: [too-short]}\n", "at least 20 characters"),
        ("models:\n  - {name: m, routes: [{provider: ghost, model: x}]}\n", "ghost"),
    ],
    ids=["yaml", "type", "variable", "tenant-key", "unknown-provider"],
)
def test_serve_refuses_an_invalid_config(tmp_path: Path, content: str, named: str) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(content)
    done = agentwatch(tmp_path, "serve", "--config", str(config), PORT=str(free_port()), **SECRETS)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("agentwatch: ")
    assert done.stderr.count("\n") == 1 and named in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_refuses_a_missing_config_file(tmp_path: Path) -> None:
    done = agentwatch(
        tmp_path, "serve", PORT=str(free_port()), AGENTWATCH_CONFIG="absent.yaml", **SECRETS
    )
    assert done.returncode == 2
    assert done.stderr.startswith("agentwatch: cannot read config file absent.yaml")
    assert done.stderr.count("\n") == 1


def test_serve_in_production_demands_secrets(tmp_path: Path) -> None:
    done = agentwatch(
        tmp_path, "serve", PORT=str(free_port()), AGENTWATCH_ENV="production", JWT_SECRET="x"
    )
    assert done.returncode == 2
    assert done.stderr == (
        "agentwatch: AGENTWATCH_ENV=production requires ENCRYPTION_KEY to be set\n"
    )
    assert not (tmp_path / "data").exists()


def test_serve_names_an_unreachable_database(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    done = agentwatch(tmp_path, "serve", database_url=url, PORT=str(free_port()), **SECRETS)
    assert done.returncode == 2
    assert done.stderr.startswith("agentwatch: cannot prepare the database:")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
