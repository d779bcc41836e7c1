"""Settings from the environment, and the NO_PROXY rules applied to upstream calls."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import stat
from pathlib import Path

import pytest

from agentwatch.settings import DEV_SECRETS_FILE, SettingsError, load_settings
from agentwatch.upstream import ProxySettings, bypasses_proxy

KEY_BYTES = bytes(range(32))
SECRETS = {"JWT_SECRET": "jwt-secret-for-tests", "ENCRYPTION_KEY": KEY_BYTES.hex()}


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings({})
    data_dir = tmp_path.resolve() / "data"
    assert settings.data_dir == data_dir
    assert settings.database_url == f"sqlite+aiosqlite:///{data_dir / 'agentwatch.db'}"
    assert settings.embedded_database
    assert (settings.host, settings.port) == ("127.0.0.1", 8787)
    assert settings.max_body_bytes == 32 * 1024 * 1024
    assert not settings.production
    assert settings.config_path is None and settings.redis_url is None
    assert (settings.https_proxy, settings.http_proxy, settings.no_proxy) == (None, None, None)


def test_data_dir_and_limits_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "AGENTWATCH_DATA_DIR": str(tmp_path / "state"),
            "AGENTWATCH_MAX_BODY_MB": "1.5",
            "HOST": "127.0.0.2",
            "PORT": "9001",
            "AGENTWATCH_CONFIG": "gateway.yaml",
            **SECRETS,
        }
    )
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'state' / 'agentwatch.db'}"
    assert settings.max_body_bytes == 3 * 512 * 1024
    assert (settings.host, settings.port) == ("127.0.0.2", 9001)
    assert settings.config_path == Path("gateway.yaml")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db:5432/aw", "postgresql+asyncpg://u:p@db:5432/aw"),
        ("postgresql://u@db/aw", "postgresql+asyncpg://u@db/aw"),
        ("postgresql+asyncpg://u@db/aw", "postgresql+asyncpg://u@db/aw"),
        ("sqlite:////var/lib/aw.db", "sqlite+aiosqlite:////var/lib/aw.db"),
        ("sqlite:///relative.db", "sqlite+aiosqlite:///relative.db"),
    ],
)
def test_database_url_is_normalised(tmp_path: Path, given: str, expected: str) -> None:
    env = {"AGENTWATCH_DATA_DIR": str(tmp_path), "DATABASE_URL": given, **SECRETS}
    settings = load_settings(env)
    assert settings.database_url == expected
    assert settings.embedded_database == expected.startswith("sqlite")


@pytest.mark.parametrize(
    ("present", "named"),
    [
        ({}, "JWT_SECRET and ENCRYPTION_KEY"),
        ({"JWT_SECRET": "set"}, "ENCRYPTION_KEY"),
        ({"ENCRYPTION_KEY": "set"}, "JWT_SECRET"),
    ],
)
def test_production_refuses_missing_secrets(
    tmp_path: Path, present: dict[str, str], named: str
) -> None:
    env = {"AGENTWATCH_DATA_DIR": str(tmp_path), "AGENTWATCH_ENV": "production", **present}
    with pytest.raises(SettingsError) as refused:
        load_settings(env)
    assert str(refused.value) == f"AGENTWATCH_ENV=production requires {named} to be set"
    assert not (tmp_path / DEV_SECRETS_FILE).exists()


def test_production_accepts_real_secrets(tmp_path: Path) -> None:
    env = {"AGENTWATCH_DATA_DIR": str(tmp_path), "AGENTWATCH_ENV": "Production", **SECRETS}
    settings = load_settings(env)
    assert settings.production and not settings.generated_secrets
    assert settings.jwt_secret == "jwt-secret-for-tests"
    assert settings.encryption_key == KEY_BYTES
    assert not (tmp_path / DEV_SECRETS_FILE).exists()


def test_development_generates_secrets_once(tmp_path: Path) -> None:
    env = {"AGENTWATCH_DATA_DIR": str(tmp_path / "data")}
    first = load_settings(env)
    path = tmp_path / "data" / DEV_SECRETS_FILE
    assert first.generated_secrets and not first.production
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first.jwt_secret) >= 32 and len(first.encryption_key) == 32
    assert json.loads(path.read_text())["jwt_secret"] == first.jwt_secret
    second = load_settings(env)
    assert (second.jwt_secret, second.encryption_key) == (first.jwt_secret, first.encryption_key)


def test_a_set_secret_wins_over_the_generated_one(tmp_path: Path) -> None:
    env = {"AGENTWATCH_DATA_DIR": str(tmp_path), "JWT_SECRET": "mine"}
    settings = load_settings(env)
    assert settings.jwt_secret == "mine"
    assert len(settings.encryption_key) == 32 and settings.generated_secrets


@pytest.mark.parametrize(
    "encoded",
    [
        KEY_BYTES.hex(),
        KEY_BYTES.hex().upper(),
        base64.b64encode(KEY_BYTES).decode(),
        base64.urlsafe_b64encode(KEY_BYTES).decode().rstrip("="),
        f"  {base64.b64encode(KEY_BYTES).decode()}\n",
    ],
    ids=["hex", "HEX", "base64", "urlsafe-unpadded", "surrounding-space"],
)
def test_encryption_key_encodings(tmp_path: Path, encoded: str) -> None:
    env = {"AGENTWATCH_DATA_DIR": str(tmp_path), "JWT_SECRET": "j", "ENCRYPTION_KEY": encoded}
    assert load_settings(env).encryption_key == KEY_BYTES


@pytest.mark.parametrize(
    "passphrase",
    ["correct horse battery staple", "short", base64.b64encode(secrets.token_bytes(16)).decode()],
)
def test_other_encryption_keys_are_stretched(tmp_path: Path, passphrase: str) -> None:
    env = {"AGENTWATCH_DATA_DIR": str(tmp_path), "JWT_SECRET": "j", "ENCRYPTION_KEY": passphrase}
    assert load_settings(env).encryption_key == hashlib.sha256(passphrase.encode()).digest()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("PORT", "-1"),
        ("AGENTWATCH_MAX_BODY_MB", "lots"),
        ("AGENTWATCH_MAX_BODY_MB", "0"),
        ("AGENTWATCH_MAX_BODY_MB", "nan"),
        ("AGENTWATCH_MAX_BODY_MB", "inf"),
    ],
)
def test_bad_numbers_are_refused(tmp_path: Path, name: str, value: str) -> None:
    env = {"AGENTWATCH_DATA_DIR": str(tmp_path), **SECRETS, name: value}
    with pytest.raises(SettingsError, match=name):
        load_settings(env)


def test_proxy_variables(tmp_path: Path) -> None:
    base = {"AGENTWATCH_DATA_DIR": str(tmp_path), **SECRETS}
    upper = load_settings(
        {
            **base,
            "HTTPS_PROXY": "http://secure:3128",
            "https_proxy": "http://ignored:1",
            "HTTP_PROXY": "http://plain:3128",
            "NO_PROXY": "localhost,.internal",
        }
    )
    assert upper.https_proxy == "http://secure:3128"
    assert upper.http_proxy == "http://plain:3128"
    assert upper.no_proxy == "localhost,.internal"
    lower = load_settings({**base, "https_proxy": "http://low:3128", "no_proxy": "*"})
    assert (lower.https_proxy, lower.http_proxy, lower.no_proxy) == ("http://low:3128", None, "*")


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "bypassed"),
    [
        ("api.openai.com", 443, "*", True),
        ("api.openai.com", 443, "localhost, *", True),
        ("api.openai.com", 443, "api.openai.com", True),
        ("API.OpenAI.com.", 443, "api.openai.com", True),
        ("api.openai.com", 443, "openai.com", True),
        ("api.openai.com", 443, ".openai.com", True),
        ("openai.com", 443, ".openai.com", True),
        ("notopenai.com", 443, "openai.com", False),
        ("openai.com.evil.net", 443, "openai.com", False),
        ("api.openai.com", 443, "anthropic.com,,example.org", False),
        ("api.openai.com", 443, "", False),
        ("llm.internal", 8080, "llm.internal:8080", True),
        ("llm.internal", 8443, "llm.internal:8080", False),
        ("a.llm.internal", 8080, ".llm.internal:8080", True),
        ("10.0.0.5", 80, "10.0.0.5", True),
        ("::1", 80, "::1", True),
    ],
)
def test_no_proxy_rules(host: str, port: int, no_proxy: str, bypassed: bool) -> None:
    assert bypasses_proxy(host, port, no_proxy) is bypassed


def test_proxy_for_picks_the_proxy_by_scheme() -> None:
    both = ProxySettings(https_proxy="http://secure:3128", http_proxy="http://plain:3128")
    assert both.proxy_for("https://api.openai.com/v1") == "http://secure:3128"
    assert both.proxy_for("http://vllm:8000/v1") == "http://plain:3128"
    https_only = ProxySettings(https_proxy="http://secure:3128")
    assert https_only.proxy_for("http://vllm:8000/v1") is None
    assert ProxySettings().proxy_for("https://api.openai.com/v1") is None


def test_proxy_for_honours_no_proxy() -> None:
    proxies = ProxySettings(
        https_proxy="http://secure:3128",
        http_proxy="http://plain:3128",
        no_proxy="localhost,.corp.example,vllm:8000",
    )
    assert proxies.proxy_for("http://localhost:11434/v1") is None
    assert proxies.proxy_for("https://llm.corp.example/v1") is None
    assert proxies.proxy_for("http://vllm:8000/v1") is None
    assert proxies.proxy_for("http://vllm:9000/v1") == "http://plain:3128"
    assert proxies.proxy_for("https://api.openai.com/v1") == "http://secure:3128"


def test_no_proxy_ports_apply_to_default_ports() -> None:
    proxies = ProxySettings(https_proxy="http://proxy:3128", no_proxy="example.com:443")
    assert proxies.proxy_for("https://example.com/v1") is None
    assert proxies.proxy_for("https://example.com:8443/v1") == "http://proxy:3128"
