"""Provider types by name, each imported only when a provider of that type is configured."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from agentwatch.providers.base import Provider, ProviderConfig
from agentwatch.upstream import UpstreamClient


@dataclass(frozen=True, slots=True)
class ProviderType:
    module: str
    class_name: str
    default_base_url: str | None
    # Sent unless the provider's own `headers` set them (names compared case-insensitively).
    default_headers: tuple[tuple[str, str], ...] = ()


PROVIDER_TYPES: dict[str, ProviderType] = {
    "openai": ProviderType(
        "agentwatch.providers.openai", "OpenAIProvider", "https://api.openai.com/v1"
    ),
    "openai_compatible": ProviderType("agentwatch.providers.openai", "OpenAIProvider", None),
    # OpenRouter is OpenAI's wire format; its attribution headers name the calling app.
    "openrouter": ProviderType(
        "agentwatch.providers.openai",
        "OpenAIProvider",
        "https://openrouter.ai/api/v1",
        default_headers=(("X-Title", "AgentWatch"),),
    ),
    # The bare origin: the adapter adds `/v1/messages`.
    "anthropic": ProviderType(
        "agentwatch.providers.anthropic", "AnthropicProvider", "https://api.anthropic.com"
    ),
    # The bare origin: the adapter adds `/v1beta/models/<id>:<method>`.
    "gemini": ProviderType(
        "agentwatch.providers.gemini",
        "GeminiProvider",
        "https://generativelanguage.googleapis.com",
    ),
}


class UnsupportedProviderType(LookupError):
    pass


def known_types() -> list[str]:
    return sorted(PROVIDER_TYPES)


def default_base_url(provider_type: str) -> str | None:
    entry = PROVIDER_TYPES.get(provider_type)
    return entry.default_base_url if entry is not None else None


def with_default_headers(provider_type: str, headers: dict[str, str]) -> dict[str, str]:
    entry = PROVIDER_TYPES.get(provider_type)
    if entry is None:
        return headers
    configured = {name.lower() for name in headers}
    defaults = {
        name: value for name, value in entry.default_headers if name.lower() not in configured
    }
    return {**defaults, **headers}


def build_provider(config: ProviderConfig, client: UpstreamClient) -> Provider:
    entry = PROVIDER_TYPES.get(config.type)
    if entry is None:
        raise UnsupportedProviderType(
            f"provider type '{config.type}' has no adapter in this version of AgentWatch"
        )
    cls = getattr(importlib.import_module(entry.module), entry.class_name)
    provider: Provider = cls(config, client)
    return provider
