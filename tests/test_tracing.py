"""OpenTelemetry traces: a gateway pointed at a local OTLP/HTTP collector stand-in exports one
server span per `/v1` call (`chat <model>`, GenAI attributes) with limit, DLP and upstream
child spans; prompt text reaches a span only with content capture on, and then redacted."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from agentwatch.settings import Settings, load_settings
from tests.fake_scripted import COMPLETION_TOKENS, PROMPT_TOKENS, FakeScripted
from tests.fake_server import ThreadedServer
from tests.support import Gateway, new_key, running_gateway

OPENAI_KEY = "sk-proj-" + secrets.token_hex(24)


@dataclass
class Collector(ThreadedServer):
    """Accepts OTLP/HTTP protobuf exports on POST /v1/traces and keeps every span."""

    spans: list[dict[str, Any]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/traces", self._export)

    async def _export(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        body = await request.read()
        export = ExportTraceServiceRequest.FromString(body)
        decoded = [
            _span(span, resource.resource)
            for resource in export.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]
        with self.lock:
            self.bodies.append(body)
            self.spans.extend(decoded)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def call_spans(self, request_id: str, timeout: float = 15) -> list[dict[str, Any]]:
        """The request span of one call (found by its request id) and every span of its trace."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                roots = [
                    s
                    for s in self.spans
                    if s["attributes"].get("agentwatch.request_id") == request_id
                ]
                if roots:
                    return [s for s in self.spans if s["trace_id"] == roots[0]["trace_id"]]
            time.sleep(0.05)
        raise AssertionError(f"no span for request {request_id}")

    def exported_bytes(self) -> bytes:
        with self.lock:
            return b"".join(self.bodies)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


def _span(span: Span, resource: Any) -> dict[str, Any]:
    return {
        "name": span.name,
        "kind": span.kind,
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_span_id": span.parent_span_id.hex(),
        "attributes": {a.key: _value(a.value) for a in span.attributes},
        "status": span.status.code,
        "service": {a.key: _value(a.value) for a in resource.attributes}.get("service.name"),
    }


def config(upstream: str, key: str) -> str:
    return f"""
providers:
  - name: scripted
    type: openai_compatible
    base_url: {upstream}
    api_key: upstream-key-do-not-trace
models:
  - name: chat
    routes: [{{provider: scripted, model: scripted-chat}}]
tenants:
  - name: app
    api_keys: [{key}]
dlp:
  default_action: log
  categories: {{secret: block, pii: redact}}
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeScripted]:
    server = FakeScripted()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    server = Collector()
    server.start()
    yield server
    server.stop()


def start(
    upstream: FakeScripted, collector: Collector, workdir: Path, env: dict[str, str]
) -> Iterator[Gateway]:
    key = new_key()
    env = {"OTEL_BSP_SCHEDULE_DELAY": "100", **env}
    with running_gateway(workdir, config(upstream.base_url, key), key, env) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def gateway(
    upstream: FakeScripted, collector: Collector, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.origin}
    yield from start(upstream, collector, tmp_path_factory.mktemp("otel"), env)


@pytest.fixture(scope="module")
def capturing_gateway(
    upstream: FakeScripted, collector: Collector, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    env = {
        "AGENTWATCH_OTLP_ENDPOINT": collector.origin + "/",
        "AGENTWATCH_OTEL_CAPTURE_CONTENT": "true",
    }
    yield from start(upstream, collector, tmp_path_factory.mktemp("otel-content"), env)


def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.tenant_key, max_retries=0)


def by_name(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    named = {span["name"]: span for span in spans}
    assert len(named) == len(spans), [span["name"] for span in spans]
    return named


@pytest.mark.parametrize("stream", [False, True])
def test_a_call_is_a_chat_span_with_stage_children(
    gateway: Gateway, collector: Collector, stream: bool
) -> None:
    canary = secrets.token_hex(12)
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="chat",
        messages=[{"role": "user", "content": f"the launch code is {canary}"}],
        stream=stream,
        **({"stream_options": {"include_usage": True}} if stream else {}),
    )
    request_id = raw.headers["x-request-id"]
    if stream:
        list(raw.parse())
    spans = by_name(collector.call_spans(request_id))
    assert set(spans) == {"chat chat", "agentwatch.limits", "agentwatch.dlp", "chat scripted-chat"}
    root = spans["chat chat"]
    assert root["parent_span_id"] == "" and root["kind"] == Span.SPAN_KIND_SERVER
    assert root["service"] == "agentwatch"
    for child in ("agentwatch.limits", "agentwatch.dlp", "chat scripted-chat"):
        assert spans[child]["parent_span_id"] == root["span_id"]
    attributes = root["attributes"]
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "chat"
    assert attributes["gen_ai.response.model"] == "scripted-chat"
    assert attributes["gen_ai.provider.name"] == "scripted"
    assert attributes["gen_ai.system"] == "scripted"
    assert attributes["gen_ai.usage.input_tokens"] == PROMPT_TOKENS
    assert attributes["gen_ai.usage.output_tokens"] == COMPLETION_TOKENS
    assert attributes["http.response.status_code"] == 200
    assert attributes["agentwatch.stream"] is stream
    assert isinstance(attributes["agentwatch.tenant_id"], int)
    assert "gen_ai.input.messages" not in attributes
    upstream_span = spans["chat scripted-chat"]
    assert upstream_span["kind"] == Span.SPAN_KIND_CLIENT
    assert upstream_span["attributes"]["gen_ai.request.model"] == "scripted-chat"
    assert upstream_span["attributes"]["agentwatch.attempts"] == 1
    exported = collector.exported_bytes()
    assert canary.encode() not in exported
    assert gateway.tenant_key.encode() not in exported
    assert b"upstream-key-do-not-trace" not in exported


def test_a_blocked_call_ends_in_the_dlp_span_without_the_secret(
    gateway: Gateway, collector: Collector
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client(gateway).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": f"key {OPENAI_KEY}"}]
        )
    spans = by_name(collector.call_spans(refused.value.response.headers["x-request-id"]))
    assert set(spans) == {"chat chat", "agentwatch.limits", "agentwatch.dlp"}
    root = spans["chat chat"]["attributes"]
    assert root["http.response.status_code"] == 400
    assert root["agentwatch.dlp.action"] == "block"
    assert "gen_ai.response.model" not in root
    assert spans["agentwatch.dlp"]["status"] == 2  # STATUS_CODE_ERROR: the refusal raised there
    assert OPENAI_KEY.encode() not in collector.exported_bytes()


def test_captured_content_is_the_redacted_messages(
    capturing_gateway: Gateway, collector: Collector
) -> None:
    email = f"{secrets.token_hex(6)}@example.com"
    raw = client(capturing_gateway).chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": f"mail {email} please"}]
    )
    spans = by_name(collector.call_spans(raw.headers["x-request-id"]))
    messages = spans["chat chat"]["attributes"]["gen_ai.input.messages"]
    assert "mail [REDACTED:EMAIL_1] please" in messages
    with pytest.raises(openai.BadRequestError) as refused:
        client(capturing_gateway).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": f"key {OPENAI_KEY}"}]
        )
    spans = by_name(collector.call_spans(refused.value.response.headers["x-request-id"]))
    assert "gen_ai.input.messages" not in spans["chat chat"]["attributes"]
    exported = collector.exported_bytes()
    assert email.encode() not in exported and OPENAI_KEY.encode() not in exported


def test_the_endpoint_settings(tmp_path: Path) -> None:
    def settings(**env: str) -> Settings:
        return load_settings({"AGENTWATCH_DATA_DIR": str(tmp_path), **env})

    assert settings().otlp_traces_url is None and not settings().otel_capture_content
    base = settings(OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4318/")
    assert base.otlp_traces_url == "http://c:4318/v1/traces"
    full = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/custom"}
    assert settings(**full).otlp_traces_url == "http://c:4318/custom"
    ours = settings(AGENTWATCH_OTLP_ENDPOINT="http://a:4318", **full)
    assert ours.otlp_traces_url == "http://a:4318/v1/traces"
    assert settings(AGENTWATCH_OTEL_CAPTURE_CONTENT="true").otel_capture_content
