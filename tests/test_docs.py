"""The documentation cannot rot: every setting, provider type, CLI command and endpoint is named."""

from __future__ import annotations

import re
from pathlib import Path

from agentwatch.cli import _parser
from agentwatch.providers.registry import known_types
from agentwatch.proxy.app import POST_ENDPOINTS

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()
API = (ROOT / "docs" / "api.md").read_text()
README = (ROOT / "README.md").read_text()


def environment_variables() -> set[str]:
    source = (ROOT / "src" / "agentwatch" / "settings.py").read_text()
    return set(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', source))


def test_every_environment_variable_is_documented() -> None:
    names = environment_variables()
    assert {"DATABASE_URL", "JWT_SECRET", "AGENTWATCH_MAX_BODY_MB"} <= names
    missing = sorted(n for n in names if f"`{n}`" not in CONFIGURATION)
    assert not missing, f"undocumented settings: {missing}"


def test_every_provider_type_is_documented() -> None:
    for name in known_types():
        assert name in CONFIGURATION and name in README, name


def test_every_cli_command_is_in_the_readme() -> None:
    parser = _parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(commands) >= {"serve", "db", "users", "keys"}
    for name in commands:
        assert f"agentwatch {name}" in README, name


def test_every_proxy_endpoint_is_documented() -> None:
    for path in [*POST_ENDPOINTS, "/v1/models"]:
        assert f"`POST {path}`" in API or f"`GET {path}`" in API, path


def test_readme_starts_with_the_two_commands() -> None:
    head = README.split("## Quick start")[0]
    assert "make run" in head and "make test" in head
