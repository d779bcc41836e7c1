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


PROVIDER_TYPES: dict[str, ProviderType] = {
    "openai": ProviderType(
        "agentwatch.providers.openai", "OpenAIProvider", "https://api.openai.com/v1"
    ),
    "openai_compatible": ProviderType("agentwatch.providers.openai", "OpenAIProvider", None),
    "openrouter": ProviderType(
        "agentwatch.providers.openai", "OpenAIProvider", "https://openrouter.ai/api/v1"
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

# Accepted in configuration now; their adapters arrive with the multi-provider work.
PLANNED_TYPES: dict[str, str] = {}


class UnsupportedProviderType(LookupError):
    pass


def known_types() -> list[str]:
    return sorted({*PROVIDER_TYPES, *PLANNED_TYPES})


def default_base_url(provider_type: str) -> str | None:
    if provider_type in PROVIDER_TYPES:
        return PROVIDER_TYPES[provider_type].default_base_url
    return PLANNED_TYPES.get(provider_type)


def build_provider(config: ProviderConfig, client: UpstreamClient) -> Provider:
    entry = PROVIDER_TYPES.get(config.type)
    if entry is None:
        raise UnsupportedProviderType(
            f"provider type '{config.type}' has no adapter in this version of AgentWatch"
        )
    cls = getattr(importlib.import_module(entry.module), entry.class_name)
    provider: Provider = cls(config, client)
    return provider
