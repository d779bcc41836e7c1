"""Every setting AgentWatch reads from the environment, read in one place."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

DEV_SECRETS_FILE = "dev-secrets.json"


class SettingsError(RuntimeError):
    """The environment cannot produce a working configuration."""


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path
    database_url: str
    redis_url: str | None
    redis_prefix: str
    jwt_secret: str
    encryption_key: bytes
    host: str
    port: int
    config_path: Path | None
    production: bool
    max_body_bytes: int
    admin_email: str | None
    admin_password: str | None
    https_proxy: str | None
    http_proxy: str | None
    no_proxy: str | None
    log_level: str
    usage_flush_seconds: float = 0.2
    # Usage rows kept in memory while the database is away; past it the oldest are spilled.
    usage_max_pending: int = 50_000
    generated_secrets: bool = False
    # Keys that provider secrets may still be encrypted with (ENCRYPTION_KEY_PREVIOUS);
    # `agentwatch keys rotate-encryption` moves everything onto `encryption_key`.
    previous_encryption_keys: tuple[bytes, ...] = ()
    # Browser origins allowed to call the gateway cross-origin (AGENTWATCH_CORS_ORIGINS);
    # none by default.
    cors_origins: tuple[str, ...] = ()
    # What rate limits and budgets do when Redis is unreachable
    # (AGENTWATCH_LIMITS_REDIS_FAILURE): "open" decides in-process, "closed" refuses (503).
    limits_redis_failure: Literal["open", "closed"] = "open"
    # The in-process response cache's bound on stored answers (AGENTWATCH_CACHE_MAX_BYTES).
    cache_max_bytes: int = 64 * 1024 * 1024
    # Per-call Prometheus recording (AGENTWATCH_METRICS off: the benchmark's A/B switch) and the
    # bearer token /metrics asks for (AGENTWATCH_METRICS_TOKEN; none: open).
    metrics_enabled: bool = True
    metrics_token: str | None = None
    # uvicorn worker processes for `agentwatch serve` (AGENTWATCH_WORKERS).
    workers: int = 1
    # One line per /v1 call (AGENTWATCH_ACCESS_LOG on|off) as JSON or logfmt text
    # (AGENTWATCH_LOG_FORMAT json|text), on stdout; see docs/observability.md.
    access_log: bool = True
    log_format: Literal["json", "text"] = "json"
    # Where OpenTelemetry spans are exported over OTLP/HTTP (the full traces URL; None: off),
    # and whether spans carry the (DLP-redacted) request messages; see docs/observability.md.
    otlp_traces_url: str | None = None
    otel_capture_content: bool = False

    @property
    def embedded_database(self) -> bool:
        return self.database_url.startswith("sqlite")

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from `environ` (the process environment by default)."""
    env = os.environ if environ is None else environ
    data_dir = Path(env.get("AGENTWATCH_DATA_DIR") or "./data").resolve()
    production = env.get("AGENTWATCH_ENV", "").lower() == "production"
    jwt_secret = env.get("JWT_SECRET") or ""
    raw_encryption_key = env.get("ENCRYPTION_KEY") or ""
    generated = False
    if not jwt_secret or not raw_encryption_key:
        if production:
            missing = [
                n
                for n, v in (("JWT_SECRET", jwt_secret), ("ENCRYPTION_KEY", raw_encryption_key))
                if not v
            ]
            raise SettingsError(
                f"AGENTWATCH_ENV=production requires {' and '.join(missing)} to be set"
            )
        dev = _dev_secrets(data_dir)
        jwt_secret = jwt_secret or dev["jwt_secret"]
        raw_encryption_key = raw_encryption_key or dev["encryption_key"]
        generated = True
    config = env.get("AGENTWATCH_CONFIG")
    return Settings(
        data_dir=data_dir,
        database_url=normalise_database_url(
            env.get("DATABASE_URL") or f"sqlite:///{data_dir / 'agentwatch.db'}"
        ),
        redis_url=env.get("REDIS_URL") or None,
        redis_prefix=env.get("AGENTWATCH_REDIS_PREFIX") or "agentwatch:",
        jwt_secret=jwt_secret,
        encryption_key=parse_encryption_key(raw_encryption_key),
        host=env.get("HOST") or "127.0.0.1",
        port=_port(env),
        config_path=Path(config) if config else None,
        production=production,
        max_body_bytes=_max_body_bytes(env),
        admin_email=env.get("AGENTWATCH_ADMIN_EMAIL") or None,
        admin_password=env.get("AGENTWATCH_ADMIN_PASSWORD") or None,
        https_proxy=env.get("HTTPS_PROXY") or env.get("https_proxy") or None,
        http_proxy=env.get("HTTP_PROXY") or env.get("http_proxy") or None,
        no_proxy=env.get("NO_PROXY") or env.get("no_proxy") or None,
        log_level=(env.get("LOG_LEVEL") or "INFO").upper(),
        usage_flush_seconds=_float(env, "AGENTWATCH_USAGE_FLUSH_SECONDS", 0.2),
        usage_max_pending=_positive_int(env, "AGENTWATCH_USAGE_MAX_PENDING", 50_000),
        generated_secrets=generated,
        previous_encryption_keys=tuple(
            parse_encryption_key(raw) for raw in _list(env, "ENCRYPTION_KEY_PREVIOUS")
        ),
        cors_origins=tuple(_list(env, "AGENTWATCH_CORS_ORIGINS")),
        limits_redis_failure=_failure_policy(env),
        cache_max_bytes=_positive_int(env, "AGENTWATCH_CACHE_MAX_BYTES", 64 * 1024 * 1024),
        metrics_enabled=_switch(env, "AGENTWATCH_METRICS", True),
        metrics_token=env.get("AGENTWATCH_METRICS_TOKEN") or None,
        workers=_positive_int(env, "AGENTWATCH_WORKERS", 1),
        access_log=_switch(env, "AGENTWATCH_ACCESS_LOG", True),
        log_format=_log_format(env),
        otlp_traces_url=_otlp_traces_url(env),
        otel_capture_content=_switch(env, "AGENTWATCH_OTEL_CAPTURE_CONTENT", False),
    )


def _otlp_traces_url(env: Mapping[str, str]) -> str | None:
    """AGENTWATCH_OTLP_ENDPOINT, else the standard variables: the traces URL as given, or the
    base URL plus the traces path."""
    base = env.get("AGENTWATCH_OTLP_ENDPOINT") or ""
    if not base:
        full = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or ""
        if full:
            return full
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or ""
    return base.rstrip("/") + "/v1/traces" if base else None


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = (env.get(name) or "").strip().lower()
    if not value:
        return default
    if value in ("on", "true", "1", "yes"):
        return True
    if value in ("off", "false", "0", "no"):
        return False
    raise SettingsError(f"{name} must be on or off, got {value!r}")


def _log_format(env: Mapping[str, str]) -> Literal["json", "text"]:
    value = (env.get("AGENTWATCH_LOG_FORMAT") or "json").strip().lower()
    if value == "json":
        return "json"
    if value == "text":
        return "text"
    raise SettingsError(f"AGENTWATCH_LOG_FORMAT must be json or text, got {value!r}")


def _failure_policy(env: Mapping[str, str]) -> Literal["open", "closed"]:
    value = (env.get("AGENTWATCH_LIMITS_REDIS_FAILURE") or "open").strip().lower()
    if value == "open":
        return "open"
    if value == "closed":
        return "closed"
    raise SettingsError(f"AGENTWATCH_LIMITS_REDIS_FAILURE must be open or closed, got {value!r}")


def _list(env: Mapping[str, str], name: str) -> list[str]:
    """A comma-separated variable; blanks dropped."""
    return [item.strip() for item in (env.get(name) or "").split(",") if item.strip()]


def normalise_database_url(url: str) -> str:
    """Accept the URLs people paste (postgres://, sqlite:///) and pick the async driver."""
    for prefix, driver in (
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(prefix):
            return driver + url[len(prefix) :]
    return url


def parse_encryption_key(raw: str) -> bytes:
    """A 32-byte AES key from base64 or hex; any other string is stretched with SHA-256."""
    text = raw.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    standard = text.replace("-", "+").replace("_", "/")
    try:
        key = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) == 32:
        return key
    return hashlib.sha256(text.encode()).digest()


def _dev_secrets(data_dir: Path) -> dict[str, str]:
    path = data_dir / DEV_SECRETS_FILE
    if path.exists():
        stored: dict[str, str] = json.loads(path.read_text())
        return stored
    data_dir.mkdir(parents=True, exist_ok=True)
    fresh = {
        "jwt_secret": secrets.token_urlsafe(48),
        "encryption_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(fresh, handle)
    return fresh


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if not value:
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise SettingsError(f"{name} must be an integer, got {value!r}") from exc


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = _int(env, name, default)
    if value < 1:
        raise SettingsError(f"{name} must be a positive integer, got {value}")
    return value


def _port(env: Mapping[str, str]) -> int:
    port = _int(env, "PORT", 8787)
    if not 1 <= port <= 65535:
        raise SettingsError(f"PORT must be between 1 and 65535, got {port}")
    return port


def _max_body_bytes(env: Mapping[str, str]) -> int:
    megabytes = _float(env, "AGENTWATCH_MAX_BODY_MB", 32.0)
    if not (megabytes > 0 and math.isfinite(megabytes)):
        raise SettingsError(f"AGENTWATCH_MAX_BODY_MB must be a positive number, got {megabytes}")
    return int(megabytes * 1024 * 1024)


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    value = env.get(name)
    if not value:
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise SettingsError(f"{name} must be a number, got {value!r}") from exc
