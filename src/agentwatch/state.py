"""The gateway's runtime state: built once in the app's lifespan, handed to whatever needs it."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from agentwatch.admin.throttle import LoginThrottle
from agentwatch.cache.response_cache import ResponseCache
from agentwatch.catalog import Catalog, load_catalog
from agentwatch.crypto import Keyring
from agentwatch.dlp.engine import Scanner
from agentwatch.dlp.policy import PolicyBook, load_policy_book
from agentwatch.metrics import GatewayMetrics
from agentwatch.observe.access_log import AccessLog
from agentwatch.observe.bodies import BodyLogging, load_body_logging
from agentwatch.observe.tracing import Tracing
from agentwatch.routing.router import Router
from agentwatch.settings import Settings
from agentwatch.spend.alerts import BudgetAlerts
from agentwatch.spend.book import ControlBook, load_control_book
from agentwatch.spend.gate import SpendGate
from agentwatch.tenant_auth import TenantAuthenticator
from agentwatch.tokens import TokenCounter
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
    scanner: Scanner
    dlp: PolicyBook
    spend: SpendGate
    alerts: BudgetAlerts
    controls: ControlBook = field(default_factory=ControlBook)
    body_logging: dict[int, BodyLogging] = field(default_factory=dict)
    login_throttle: LoginThrottle = field(default_factory=LoginThrottle)
    tokens: TokenCounter = field(default_factory=TokenCounter)  # default: approximate counts
    cache: ResponseCache = field(default_factory=ResponseCache)  # the exact response cache
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    access_log: AccessLog | None = None  # None: AGENTWATCH_ACCESS_LOG=off
    tracing: Tracing | None = None  # None: no OTLP endpoint configured

    async def reload_catalog(self) -> None:
        """Rebuild the routing table, the DLP policies and the spend controls from the database
        (the background refresh, admin writes)."""
        async with self.sessions() as session:
            keyring = Keyring.from_settings(self.settings)
            self.catalog = await load_catalog(session, keyring, self.upstream)
            self.dlp = await load_policy_book(session, self.dlp.base, self.scanner.detectors)
            self.controls = await load_control_book(session)
            self.body_logging = await load_body_logging(session)
            await self.cache.reload(session)
