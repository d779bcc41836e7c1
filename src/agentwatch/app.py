"""The gateway ASGI application: `/v1` proxy on the hot path, FastAPI for everything else."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agentwatch.admin.routes import router as admin_router
from agentwatch.api_guard import AdminRequestGuard, install_error_handlers
from agentwatch.bootstrap import bootstrap
from agentwatch.cache.build import build_response_cache
from agentwatch.catalog import load_catalog
from agentwatch.config_file import GatewayConfig, load_config
from agentwatch.crypto import Keyring
from agentwatch.db.engine import create_engine, session_factory
from agentwatch.db.migrate import upgrade_database
from agentwatch.dlp.engine import default_scanner
from agentwatch.dlp.policy import DlpPolicy, load_policy_book
from agentwatch.http_guard import HttpGuard
from agentwatch.metrics import GatewayMetrics
from agentwatch.observe.access_log import AccessLog
from agentwatch.observe.bodies import load_body_logging, retention_forever
from agentwatch.observe.tracing import Tracing
from agentwatch.proxy.app import ProxyApp
from agentwatch.proxy.asgi_io import Receive, Scope, Send
from agentwatch.routing.router import Router
from agentwatch.routing.shared import POLL_SECONDS as SHARED_CIRCUIT_POLL_SECONDS
from agentwatch.routing.shared import SharedCircuits
from agentwatch.settings import Settings, load_settings
from agentwatch.spend.alerts import BudgetAlerts
from agentwatch.spend.book import load_control_book
from agentwatch.spend.gate import SpendGate
from agentwatch.spend.reconcile_job import reconcile_forever
from agentwatch.spend.stores import build_limit_store
from agentwatch.state import AppState
from agentwatch.tenant_auth import TenantAuthenticator
from agentwatch.tokens import TokenCounter
from agentwatch.upstream import ProxySettings, UpstreamClient
from agentwatch.usage.recorder import UsageRecorder
from agentwatch.usage.rollup import RollupJob

log = logging.getLogger(__name__)
CATALOG_REFRESH_SECONDS = 10.0
GAUGE_REFRESH_SECONDS = 1.0
USAGE_SPILL_FILE = "usage-spill.jsonl"


class Gateway:
    """Sends `/v1/...` straight to the proxy and the rest to FastAPI."""

    def __init__(self, api: FastAPI, proxy: ProxyApp) -> None:
        self.api = api
        self.proxy = proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            await self.proxy(scope, receive, send)
        else:
            await self.api(scope, receive, send)


def create_app(
    settings: Settings, config: GatewayConfig | None = None, *, database_ready: bool = False
) -> HttpGuard:
    """`database_ready`: `prepare_database` already ran (as `serve` does), so start-up
    neither migrates nor bootstraps a second time."""
    api = FastAPI(
        title="AgentWatch admin API",
        version="0.1.0",
        openapi_url="/api/openapi.json",
        docs_url=None,  # Swagger UI would load its assets from a CDN; the gateway stays offline
        redoc_url=None,
        lifespan=lambda app: _lifespan(app, settings, config, database_ready),
    )
    api.add_middleware(AdminRequestGuard)
    install_error_handlers(api)
    api.include_router(admin_router)

    metrics = GatewayMetrics(enabled=settings.metrics_enabled)
    api.state.metrics = metrics

    @api.get("/metrics", tags=["health"], include_in_schema=False)
    async def scrape(request: Request) -> Response:
        if settings.metrics_token is not None and not _bearer_matches(
            request.headers.get("authorization", ""), settings.metrics_token
        ):
            return Response(
                "a bearer token is required\n",
                status_code=401,
                headers={"www-authenticate": "Bearer"},
            )
        body = metrics.exposition(getattr(api.state, "agentwatch", None))
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @api.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        state: AppState = api.state.agentwatch
        try:
            async with state.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError) as exc:
            return JSONResponse({"status": "unavailable", "database": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    gateway = Gateway(api, ProxyApp(lambda: api.state.agentwatch))
    return HttpGuard(gateway, settings.cors_origins)


def create_worker_app() -> HttpGuard:
    """The app of one `serve --workers N` process: settings and config from the environment,
    the database already prepared by the parent."""
    settings = load_settings()
    config = load_config(settings.config_path) if settings.config_path is not None else None
    return create_app(settings.with_overrides(config_path=None), config, database_ready=True)


def _bearer_matches(header: str, token: str) -> bool:
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token)


async def prepare_database(settings: Settings, config: GatewayConfig | None) -> None:
    """Migrate, then apply the start-up state; `serve` runs this before binding its port so
    a bad config or an unreachable database is a one-line error, not a failed lifespan."""
    engine = create_engine(settings.database_url)
    try:
        await upgrade_database(engine)
        await _bootstrap(session_factory(engine), settings, config)
    finally:
        await engine.dispose()


async def _bootstrap(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, config: GatewayConfig | None
) -> int:
    return await bootstrap(
        sessions,
        encryption_key=Keyring.from_settings(settings),
        config=config,
        admin_email=settings.admin_email,
        admin_password=settings.admin_password,
    )


async def start_state(
    settings: Settings,
    config: GatewayConfig | None,
    *,
    database_ready: bool = False,
    metrics: GatewayMetrics | None = None,
) -> AppState:
    """`metrics`: where the calls and the counters built with the state (the limit store's)
    are recorded; a fresh set if none."""
    metrics = metrics if metrics is not None else GatewayMetrics()
    if config is None and settings.config_path is not None:
        config = load_config(settings.config_path)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)
    if not database_ready:
        await upgrade_database(engine)
        await _bootstrap(sessions, settings, config)
    upstream = UpstreamClient(
        ProxySettings(settings.https_proxy, settings.http_proxy, settings.no_proxy)
    )
    scanner = default_scanner()
    base_policy = config.dlp if config is not None else DlpPolicy()
    async with sessions() as session:
        catalog = await load_catalog(session, Keyring.from_settings(settings), upstream)
        dlp = await load_policy_book(session, base_policy, scanner.detectors)
        controls = await load_control_book(session)
        body_logging = await load_body_logging(session)
        cache = build_response_cache(settings)
        await cache.reload(session)
    recorder = UsageRecorder(
        sessions,
        settings.data_dir / USAGE_SPILL_FILE,
        settings.usage_flush_seconds,
        max_pending=settings.usage_max_pending,
    )
    await recorder.start()
    tokens = await asyncio.to_thread(TokenCounter.from_environment, settings.data_dir)
    return AppState(
        settings=settings,
        engine=engine,
        sessions=sessions,
        upstream=upstream,
        authenticator=TenantAuthenticator(sessions),
        recorder=recorder,
        catalog=catalog,
        router=Router(),
        scanner=scanner,
        dlp=dlp,
        spend=SpendGate(
            build_limit_store(settings, sessions, metrics.registry), tokens.count_prompt_tokens
        ),
        alerts=BudgetAlerts(
            sessions, Keyring.from_settings(settings), upstream.http, metrics.budget_spent
        ),
        controls=controls,
        body_logging=body_logging,
        tokens=tokens,
        cache=cache,
        metrics=metrics,
        access_log=AccessLog(settings.log_format) if settings.access_log else None,
        tracing=(
            Tracing(settings.otlp_traces_url, capture_content=settings.otel_capture_content)
            if settings.otlp_traces_url is not None
            else None
        ),
    )


async def stop_state(state: AppState) -> None:
    await state.alerts.drain()
    await state.spend.store.close()
    await state.recorder.close()
    await state.cache.close()
    await state.upstream.close()
    await state.engine.dispose()
    if state.tracing is not None:
        # Flushes the spans still queued; the exporter's HTTP call blocks, so not on the loop.
        await asyncio.to_thread(state.tracing.shutdown)


@asynccontextmanager
async def _lifespan(
    api: FastAPI, settings: Settings, config: GatewayConfig | None, database_ready: bool
) -> AsyncIterator[None]:
    state = await start_state(
        settings, config, database_ready=database_ready, metrics=api.state.metrics
    )
    api.state.agentwatch = state
    # Everything built so far lives as long as the process: move it out of the collector's
    # sight, so a full collection scans only what requests allocate (a full pass over the
    # start-up heap took ~60 ms, a p99 spike whenever it ran).
    gc.collect()
    gc.freeze()
    background = [asyncio.create_task(_refresh_forever(state), name="catalog-refresh")]
    background.append(
        asyncio.create_task(RollupJob(state.sessions).run_forever(), name="usage-rollup")
    )
    background.append(asyncio.create_task(reconcile_forever(state), name="budget-reconcile"))
    background.append(asyncio.create_task(retention_forever(state), name="request-log-retention"))
    background.append(asyncio.create_task(_refresh_gauges(state), name="metrics-gauges"))
    shared = _shared_circuits(settings)
    if shared is not None:
        state.router.shared = shared
        background.append(asyncio.create_task(_sync_circuits(state, shared), name="circuits"))
    try:
        yield
    finally:
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if shared is not None:
            await shared.close()
        await stop_state(state)


def _shared_circuits(settings: Settings) -> SharedCircuits | None:
    if settings.redis_url is None:
        return None
    return SharedCircuits(Redis.from_url(settings.redis_url), settings.redis_prefix)


async def _sync_circuits(state: AppState, shared: SharedCircuits) -> None:
    """Adopt circuits other replicas opened; Redis being away only delays that."""
    while True:
        try:
            state.router.adopt_open_circuits(await shared.open_routes())
        except (RedisError, OSError) as exc:
            log.warning("could not read shared circuit state from Redis: %s", exc)
        await asyncio.sleep(SHARED_CIRCUIT_POLL_SECONDS)


async def _refresh_gauges(state: AppState) -> None:
    """With several workers a scrape reads every process's gauges from files: keep this one's
    current (a scrape refreshes the answering process's own anyway)."""
    while True:
        state.metrics.refresh(state)
        await asyncio.sleep(GAUGE_REFRESH_SECONDS)


async def _refresh_forever(state: AppState) -> None:
    """Admin writes from other processes (CLI, replicas) reach this one within the interval."""
    while True:
        await asyncio.sleep(CATALOG_REFRESH_SECONDS)
        try:
            await state.reload_catalog()
        except (SQLAlchemyError, OSError) as exc:
            log.warning("catalog refresh failed, keeping the previous one: %s", exc)
