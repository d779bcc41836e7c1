"""The gateway's runtime state: built once in the app's lifespan, handed to whatever needs it."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from agentwatch.admin.throttle import LoginThrottle
from agentwatch.catalog import Catalog
from agentwatch.routing.router import Router
from agentwatch.settings import Settings
from agentwatch.tenant_auth import TenantAuthenticator
from agentwatch.upstream import UpstreamClient
from agentwatch.usage.recorder import UsageRecorder


@dataclass(slots=True)
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    upstream: UpstreamClient
    authenticator: TenantAuthenticator
    recorder: UsageRecorder
    catalog: Catalog
    router: Router
    login_throttle: LoginThrottle = field(default_factory=LoginThrottle)
