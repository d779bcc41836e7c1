"""One proxied call's bookkeeping, turned into a usage-ledger row when the call ends."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from agentwatch.catalog import Catalog, Route
from agentwatch.dlp.inspect import Inspection
from agentwatch.errors import GatewayError
from agentwatch.providers.base import Usage
from agentwatch.tenant_auth import Principal
from agentwatch.usage.recorder import ConversationEvent, UsageEvent

CLIENT_CLOSED_STATUS = 499  # nginx's code for "client closed the request"


@dataclass(slots=True)
class Call:
    request_id: str
    endpoint: str
    started: float = field(default_factory=time.perf_counter)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    principal: Principal | None = None
    model: str = ""
    route: Route | None = None
    stream: bool = False
    status: int = 200
    error_type: str | None = None
    usage: Usage | None = None
    first_byte_at: float | None = None
    attempts: int = 0  # upstream attempts, retries and failovers included
    failovers: int = 0  # routes given up on before the one that answered
    body_bytes: int = 0
    # Client headers a native adapter forwards upstream (Anthropic's beta flags).
    forward_headers: dict[str, str] = field(default_factory=dict)
    tags: frozenset[str] = frozenset()  # only routes carrying all of them may serve the call
    render_error: Callable[[GatewayError], bytes] = GatewayError.to_json
    streamed_events: int = 0
    dlp: Inspection | None = None  # set when the caller's DLP policy scans anything

    def failed(self, error: GatewayError) -> None:
        self.status = error.status
        self.error_type = error.code or error.type

    def client_gone(self) -> None:
        self.status = CLIENT_CLOSED_STATUS
        self.error_type = "client_disconnected"

    def mark_first_byte(self) -> None:
        if self.first_byte_at is None:
            self.first_byte_at = time.perf_counter()

    def _estimated_usage(self) -> Usage:
        """Without the upstream's count (the client hung up first), bill what was sent:
        about 4 bytes of request per prompt token, about one token per streamed event."""
        if not self.streamed_events:
            return Usage()
        return Usage(
            prompt_tokens=max(1, self.body_bytes // 4), completion_tokens=self.streamed_events
        )

    def usage_event(self, catalog: Catalog) -> UsageEvent | None:
        if self.principal is None:
            return None
        ended = time.perf_counter()
        usage = self.usage or self._estimated_usage()
        price = catalog.price_for(self.principal.org_id, self.route, self.model)
        return UsageEvent(
            request_id=self.request_id,
            created_at=self.created_at,
            org_id=self.principal.org_id,
            tenant_id=self.principal.tenant_id,
            api_key_id=self.principal.api_key_id,
            model=self.model,
            provider=self.route.provider_name if self.route else None,
            upstream_model=self.route.upstream_model if self.route else None,
            endpoint=self.endpoint,
            stream=self.stream,
            status=self.status,
            error_type=self.error_type,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            attempts=self.attempts,
            team_id=self.principal.team_id,
            cost_nanousd=price.cost_nanousd(usage) if price else 0,
            latency_ms=round((ended - self.started) * 1000, 3),
            ttft_ms=(
                round((self.first_byte_at - self.started) * 1000, 3)
                if self.first_byte_at is not None
                else None
            ),
        )

    def conversation_event(self) -> ConversationEvent | None:
        """The call's `conversations` row, when DLP found anything in it."""
        inspection = self.dlp
        if self.principal is None or inspection is None or not inspection.events:
            return None
        principal = self.principal
        return ConversationEvent(
            request_id=self.request_id,
            created_at=self.created_at,
            org_id=principal.org_id,
            tenant_id=principal.tenant_id,
            api_key_id=principal.api_key_id,
            team_id=principal.team_id,
            model=self.model,
            endpoint=self.endpoint,
            status=self.status,
            dlp_action=inspection.strongest_action,
            dlp_events=[event.as_json() for event in inspection.events],
            risk_score=inspection.risk_score,
        )
