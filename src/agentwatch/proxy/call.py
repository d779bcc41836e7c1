"""One proxied call's bookkeeping, turned into a usage-ledger row when the call ends."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from agentwatch.cache.response_cache import CacheTicket
from agentwatch.cache.savings import hit_savings
from agentwatch.catalog import Catalog, Route
from agentwatch.dlp.inspect import Inspection
from agentwatch.errors import GatewayError
from agentwatch.observe.bodies import logged_messages, redacted
from agentwatch.providers.base import JSONObject, Usage
from agentwatch.spend.gate import Ticket, rate_headers
from agentwatch.tenant_auth import Principal
from agentwatch.token_text import StreamedText
from agentwatch.tokens import TokenCounter
from agentwatch.usage.recorder import ConversationEvent, UsageEvent

if TYPE_CHECKING:
    from agentwatch.observe.tracing import RequestTrace

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
    upstream_seconds: float = 0.0  # waiting on upstreams: routing and attempts, stream relay
    attempts: int = 0  # upstream attempts, retries and failovers included
    failovers: int = 0  # routes given up on before the one that answered
    # Client headers a native adapter forwards upstream (Anthropic's beta flags).
    forward_headers: dict[str, str] = field(default_factory=dict)
    tags: frozenset[str] = frozenset()  # only routes carrying all of them may serve the call
    render_error: Callable[[GatewayError], bytes] = GatewayError.to_json
    payload: JSONObject | None = None  # the request as parsed: its prompt, counted if need be
    streamed: StreamedText = field(default_factory=StreamedText)  # events the upstream sent
    dlp: Inspection | None = None  # set when the caller's DLP policy scans anything
    spend: Ticket | None = None  # what the limit stage took, settled when the call ends
    end_user: str | None = None  # the x-agentwatch-user header: per-user limits
    log_bodies: bool = False  # the organisation keeps request and answer text
    answer_text: str | None = None  # a whole answer's text, kept when log_bodies
    trace: RequestTrace | None = None  # set when traces are exported
    cache: CacheTicket | None = None  # set when the response cache was consulted

    def response_headers(self) -> list[tuple[bytes, bytes]]:
        """Headers every answer carries beyond the request id: the rate-limit windows."""
        headers = [] if self.cache is None else [self.cache.header]
        if self.spend is not None:
            admission = self.spend.admission
            headers += rate_headers((admission.requests, admission.tokens))
        return headers

    def failed(self, error: GatewayError) -> None:
        self.status = error.status
        self.error_type = error.code or error.type

    def client_gone(self) -> None:
        self.status = CLIENT_CLOSED_STATUS
        self.error_type = "client_disconnected"

    def mark_first_byte(self) -> None:
        if self.first_byte_at is None:
            self.first_byte_at = time.perf_counter()

    def hung_up_mid_stream(self, reported: Usage | None, tokens: TokenCounter) -> None:
        """The client left before the upstream's final count: meter what the upstream produced
        all the same. Completion: the tokens of the text it streamed so far (at least what it
        reported so far). Prompt: its own count if it gave one, else the request counted here."""
        self.client_gone()
        model = self.route.upstream_model if self.route is not None else self.model
        produced = sum(tokens.count_text_tokens(text, model) for text in self.streamed.texts())
        if reported is None:
            prompt = tokens.count_prompt_tokens(self.endpoint, self.payload or {}, model)
            self.usage = Usage(prompt_tokens=prompt, completion_tokens=produced)
        else:
            completion = max(reported.completion_tokens, produced)
            self.usage = dataclasses.replace(reported, completion_tokens=completion)

    def usage_event(self, catalog: Catalog) -> UsageEvent | None:
        if self.principal is None:
            return None
        ended = time.perf_counter()
        usage, cost = self.usage, None
        if usage is not None:
            cost = catalog.cost_nanousd(self.principal.org_id, self.route, self.model, usage)
        elif self.attempts == 0:
            usage, cost = Usage(), 0  # refused before any upstream saw it: nothing to pay
        # Otherwise an upstream answered without a count: tokens and cost unknown (NULL).
        saved = None
        if self.cache is not None and self.cache.hit:
            # Served from the cache: nothing paid upstream; saved, the alias's first route.
            saved, cost = hit_savings(catalog, self.principal.org_id, self.model, usage), 0
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
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            cached_tokens=usage.cached_tokens if usage else 0,
            cache_write_tokens=usage.cache_write_tokens if usage else 0,
            reasoning_tokens=usage.reasoning_tokens if usage else None,
            attempts=self.attempts,
            team_id=self.principal.team_id,
            cost_nanousd=cost,
            latency_ms=round((ended - self.started) * 1000, 3),
            ttft_ms=(
                round((self.first_byte_at - self.started) * 1000, 3)
                if self.first_byte_at is not None
                else None
            ),
            cache_hit=self.cache is not None and self.cache.hit,
            saved_nanousd=saved,
        )

    def conversation_event(self) -> ConversationEvent | None:
        """The call's `conversations` row: when DLP found anything in it, and for every call
        of an organisation that logs bodies (then with its text, but never a blocked call's)."""
        inspection = self.dlp
        principal = self.principal
        found = inspection is not None and bool(inspection.events)
        if principal is None or not (found or self.log_bodies):
            return None
        messages: list[dict[str, object]] = []
        if self.log_bodies and self.error_type != "dlp_blocked":
            answer = self.answer_text
            if answer is None and self.stream:
                answer = redacted("".join(self.streamed.texts()), inspection)
            messages = logged_messages(self.endpoint, self.payload, answer)
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
            dlp_action=inspection.strongest_action if inspection is not None else None,
            dlp_events=[e.as_json() for e in inspection.events] if inspection is not None else [],
            risk_score=inspection.risk_score if inspection is not None else 0.0,
            messages=messages,
        )
