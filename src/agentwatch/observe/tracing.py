"""OpenTelemetry traces of `/v1` calls, exported over OTLP/HTTP when an endpoint is configured.

One server span per call (`chat <model>`, GenAI semantic-convention attributes) with child
spans for the limit stage, the DLP stage and the upstream call. Off by default: without an
endpoint no tracer exists and the proxy touches nothing but a `None` check per stage. The
provider is private to the gateway (never installed as OpenTelemetry's global one).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import orjson
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

if TYPE_CHECKING:
    from agentwatch.proxy.call import Call

SERVICE_NAME = "agentwatch"
# GenAI operation names (gen_ai.operation.name) of the endpoints; the rest are named by path.
_OPERATIONS = {
    "/v1/chat/completions": "chat",
    "/v1/messages": "chat",
    "/v1/responses": "chat",
    "/v1/embeddings": "embeddings",
    "/v1/completions": "text_completion",
}
_MAX_NAME_CHARS = 200  # the model is the client's string
_NO_SPAN: AbstractContextManager[None] = contextlib.nullcontext()


class Tracing:
    """The tracer provider, its batch processor and exporter: built in the lifespan when an
    endpoint is set, shut down (flushing queued spans) when the gateway stops."""

    def __init__(self, url: str, *, capture_content: bool = False) -> None:
        attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": SERVICE_NAME}
        self._provider = TracerProvider(resource=Resource.create(attributes))
        # Schedule delay, queue and batch sizes come from the standard OTEL_BSP_* variables.
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
        self.tracer: Tracer = self._provider.get_tracer("agentwatch")
        self.capture_content = capture_content

    def begin(self, call: Call, method: str) -> RequestTrace:
        return RequestTrace(self, call, method)

    def shutdown(self) -> None:
        self._provider.shutdown()


class RequestTrace:
    """One call's server span and the context its stage spans hang from."""

    __slots__ = ("_context", "_tracing", "operation", "span")

    def __init__(self, tracing: Tracing, call: Call, method: str) -> None:
        self._tracing = tracing
        self.operation = _OPERATIONS.get(call.endpoint)
        self.span: Span = tracing.tracer.start_span(
            f"{method} {call.endpoint}",
            kind=SpanKind.SERVER,
            attributes={"agentwatch.request_id": call.request_id, "http.request.method": method},
        )
        self._context = trace.set_span_in_context(self.span)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[Span]:
        """A child span; an exception escaping it is recorded on it (and still raised)."""
        with self._tracing.tracer.start_as_current_span(
            name, context=self._context, end_on_exit=True
        ) as span:
            yield span

    @contextlib.contextmanager
    def upstream(self, call: Call) -> Iterator[None]:
        """The upstream stage: routing, attempts (retries, failover) and a stream's relay."""
        with self._tracing.tracer.start_as_current_span(
            "upstream", context=self._context, kind=SpanKind.CLIENT
        ) as span:
            try:
                yield
            finally:
                route = call.route
                if route is not None:
                    model = route.upstream_model[:_MAX_NAME_CHARS]
                    span.update_name(f"{self.operation or 'call'} {model}")
                    span.set_attributes(
                        {
                            "gen_ai.provider.name": route.provider_name,
                            "gen_ai.system": route.provider_name,
                            "gen_ai.request.model": model,
                        }
                    )
                span.set_attribute("agentwatch.attempts", call.attempts)

    def request_content(self, payload: Mapping[str, Any]) -> None:
        """The request's messages as DLP left them (redacted), when content capture is on."""
        if not self._tracing.capture_content:
            return
        messages = payload.get("messages", payload.get("input"))
        if messages is not None:
            self.span.set_attribute("gen_ai.input.messages", orjson.dumps(messages).decode())

    def finish(self, call: Call) -> None:
        span = self.span
        model = call.model[:_MAX_NAME_CHARS]
        if self.operation is not None:
            span.update_name(f"{self.operation} {model}" if model else self.operation)
            span.set_attribute("gen_ai.operation.name", self.operation)
        attributes: dict[str, str | int | bool] = {
            "http.response.status_code": call.status,
            "gen_ai.request.model": model,
            "agentwatch.stream": call.stream,
        }
        if call.route is not None:
            attributes["gen_ai.response.model"] = call.route.upstream_model
            attributes["gen_ai.provider.name"] = call.route.provider_name
            attributes["gen_ai.system"] = call.route.provider_name
        if call.usage is not None:
            attributes["gen_ai.usage.input_tokens"] = call.usage.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = call.usage.completion_tokens
        principal = call.principal
        if principal is not None:
            attributes["agentwatch.org_id"] = principal.org_id
            if principal.tenant_id is not None:
                attributes["agentwatch.tenant_id"] = principal.tenant_id
        if call.error_type is not None:
            attributes["error.type"] = call.error_type
        action = None if call.dlp is None else call.dlp.strongest_action
        if action is not None and call.dlp is not None:
            attributes["agentwatch.dlp.action"] = action
            attributes["agentwatch.dlp.findings"] = len(call.dlp.events)
        span.set_attributes(attributes)
        if call.status >= 500:
            span.set_status(Status(StatusCode.ERROR, call.error_type))
        span.end()


def stage(call: Call, name: str) -> AbstractContextManager[Any]:
    """A stage's span, or a shared do-nothing context when the call is not traced."""
    request = call.trace
    return _NO_SPAN if request is None else request.stage(name)


def upstream(call: Call) -> AbstractContextManager[Any]:
    """The upstream stage's span, or the shared do-nothing context."""
    request = call.trace
    return _NO_SPAN if request is None else request.upstream(call)
